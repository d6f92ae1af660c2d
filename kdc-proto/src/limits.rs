//! Size bounds on every encoded object.
//!
//! Tickets and authenticators travel in one `Authorization` header, and common
//! servers and proxies cap a header at 8 KiB. The caps below keep a ticket plus
//! an authenticator well under that, and every parser refuses input over its
//! bound before doing any work on it.

/// Longest encoded ticket the KDC will mint or a verifier will parse (bytes).
pub const MAX_TICKET_LEN: usize = 6 * 1024;
/// Longest encoded authenticator (bytes).
pub const MAX_AUTHENTICATOR_LEN: usize = 1024;
/// Longest sealed object of any other kind (KDC reply parts, pre-auth data).
pub const MAX_SEALED_LEN: usize = 16 * 1024;
/// Longest principal name, realm included (bytes).
pub const MAX_PRINCIPAL_LEN: usize = 255;
/// Most roles a principal may hold.
pub const MAX_ROLES: usize = 64;
/// Longest role name (bytes).
pub const MAX_ROLE_LEN: usize = 64;
/// Longest JSON body the KDC accepts on any endpoint (bytes).
pub const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Longest protected header of a sealed object, once decoded (bytes).
pub const MAX_HEADER_LEN: usize = 512;
