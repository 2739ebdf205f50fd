"""One rank of the Gloo (torch.distributed / c10d ProcessGroupGloo) all-reduce benchmark.

The peer of allreduce_bench.cpp, same protocol: FileStore rendezvous in --dir, for every
size `warmup` untimed and `iters` timed all-reduces of fp32 (rank + 1 everywhere), each
right after a barrier; the sum W(W+1)/2 is checked. Writes JSON lines to --out.
Run with Debian's /usr/bin/python3 (python3-torch).
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world", type=int, default=4)
    p.add_argument("--dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--sizes-mb", default="1,4,16,64,256")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(1)
    store = dist.FileStore(os.path.join(a.dir, "gloo-store"), a.world)
    dist.init_process_group("gloo", store=store, rank=a.rank, world_size=a.world)
    expected = a.world * (a.world + 1) / 2
    with open(a.out, "w") as out:
        for mb in [float(x) for x in a.sizes_mb.split(",")]:
            n = int(mb * (1 << 20)) // 4
            t = torch.empty(n, dtype=torch.float32)
            for it in range(-a.warmup, a.iters):
                t.fill_(a.rank + 1)
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(t)
                s = time.perf_counter() - t0
                if n and not bool((t[:: 4097] == expected).all()):
                    raise SystemExit(f"gloo: wrong sum for {mb} MB")
                if it >= 0:
                    out.write(json.dumps({"impl": "gloo", "curve": False, "wire": "fp32", "rank": a.rank,
                                          "world": a.world, "bytes": n * 4, "iter": it, "seconds": s}) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
