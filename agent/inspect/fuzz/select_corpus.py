#!/usr/bin/env python3
"""Minimizes a grown corpus into corpus/<target>/ within a size budget (the repo must stay small).

    python3 select_corpus.py TARGET BUDGET_BYTES DIR...

Like `cargo fuzz cmin` (libFuzzer -merge=1, here on edge coverage only: -use_counters=0), with the
checked-in seed-* and regress-* files as the base that is always kept; then, because inputs that
exercise the whole analysis are ~20 KB and iced-x86/gimli alone offer thousands of edges, keeps
the merged inputs with the most new edges per byte until BUDGET_BYTES (seeds included) is
reached. Everything else in corpus/TARGET is replaced. Build the targets first (`cargo fuzz build`).
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    target, budget, dirs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    corpus = os.path.join(HERE, "corpus", target)
    binary = os.path.join(HERE, "target/x86_64-unknown-linux-gnu/release", target)
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        os.makedirs(base)
        kept = [f for f in os.listdir(corpus) if f.startswith(("seed-", "regress-"))]
        for f in kept:
            shutil.copy(os.path.join(corpus, f), base)
        ctl = os.path.join(tmp, "ctl")
        subprocess.run([binary, "-merge=1", "-use_counters=0", f"-merge_control_file={ctl}",
                        "-rss_limit_mb=1024", "-malloc_limit_mb=512", "-timeout=10", base,
                        corpus, *dirs], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        lines = open(ctl).read().splitlines()
        nfiles, ninitial = int(lines[0]), int(lines[1])
        files = lines[2:2 + nfiles]
        new_edges = {}
        for line in lines[2 + nfiles:]:
            if line.startswith("COV "):
                parts = line.split()
                new_edges[int(parts[1])] = len(parts) - 2
        cands = [(n / max(os.path.getsize(files[i]), 1), i) for i, n in new_edges.items()
                 if i >= ninitial and n > 0]
        cands.sort(reverse=True)
        total = sum(os.path.getsize(os.path.join(base, f)) for f in kept)
        chosen = []
        for _, i in cands:
            size = os.path.getsize(files[i])
            if total + size <= budget:
                chosen.append(files[i])
                total += size
        contents = {os.path.basename(f): open(f, "rb").read() for f in chosen}
        for f in os.listdir(corpus):
            if f not in kept:
                os.remove(os.path.join(corpus, f))
        for name, data in contents.items():
            with open(os.path.join(corpus, name), "wb") as out:
                out.write(data)
        edges = sum(new_edges.get(files.index(f), 0) for f in chosen)
        print(f"{target}: {len(kept)} seeds/regressions + {len(chosen)} of {len(cands)} merged "
              f"inputs ({edges} of {sum(new_edges.get(i, 0) for _, i in cands)} new edges), "
              f"{total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
