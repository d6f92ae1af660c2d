#!/usr/bin/env python3
"""Lists the public top-level items of a crate from rustdoc JSON, by the path a user writes."""
import json,sys
d=json.load(open(sys.argv[1]))
idx=d["index"]; paths=d["paths"]
out=set()
def kind_of(item):
    return next(iter(item["inner"])) if isinstance(item["inner"],dict) else item["inner"]
def walk(mid, prefix, seen):
    if mid in seen: return
    seen=seen|{mid}
    m=idx[str(mid)]
    for cid in m["inner"]["module"]["items"]:
        it=idx.get(str(cid))
        if it is None: continue
        k=kind_of(it)
        if k=="module":
            out.add(f"mod {prefix}::{it['name']}")
            walk(cid, f"{prefix}::{it['name']}", seen)
        elif k=="use":
            u=it["inner"]["use"]
            tgt=u.get("id")
            if u.get("is_glob"):
                if tgt is not None and str(tgt) in idx and kind_of(idx[str(tgt)])=="module":
                    walk(tgt, prefix, seen)
                continue
            if tgt is not None and str(tgt) in idx:
                t=idx[str(tgt)]; tk=kind_of(t)
                if tk=="module":
                    out.add(f"mod {prefix}::{u['name']}"); walk(tgt, f"{prefix}::{u['name']}", seen)
                else:
                    out.add(f"{tk} {prefix}::{u['name']}")
            elif tgt is not None and str(tgt) in paths and paths[str(tgt)]["crate_id"]==0:
                out.add(f"{paths[str(tgt)]['kind']} {prefix}::{u['name']}")
            else:
                out.add(f"reexport {prefix}::{u['name']} (from {u['source']})")
        elif k in ("impl",): continue
        else:
            out.add(f"{k} {prefix}::{it['name']}")
root=d["root"]
walk(root, idx[str(root)]["name"], frozenset())
for x in sorted(out, key=lambda s: s.split(" ",1)[1]): print(x)
