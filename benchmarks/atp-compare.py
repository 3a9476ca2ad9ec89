#!/usr/bin/env python3
"""Attribution patching against exact patching on the same cells, with `scalpel trace --json`.

For each kind, runs the exact sweep and the attribution estimate in the same process order, then prints the
Pearson and Spearman correlations of the effects (score − base score) over all cells, the overlap of the top-10
cells by |effect|, and both sweeps' times (the `seconds` the library measured, model loading excluded).

  python3 benchmarks/atp-compare.py --scalpel .build/release/scalpel --kinds resid,mlp,attn \
      --prompt "The Eiffel Tower is located in the city of" --subject "Eiffel Tower" [-- extra trace options]
"""
import argparse, json, subprocess, sys

import numpy as np
from scipy import stats


def run(scalpel, kind, method, extra):
    window = ["--window", "10"] if kind in ("mlp", "attn") else []
    cmd = [scalpel, "trace", "--kind", kind, "--method", method, "--json"] + window + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["results"][0]


def effects(r):
    base = r["corrupted"] if r["direction"] == "denoise" else r["clean"]
    s = np.array([[np.nan if v is None else v for v in row] for row in r["scores"]], dtype=float)
    return s - base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scalpel", default=".build/release/scalpel")
    ap.add_argument("--kinds", default="resid,mlp,attn")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="options passed to scalpel trace")
    a, rest = ap.parse_known_args()
    extra = rest + [x for x in a.extra if x != "--"]
    for kind in a.kinds.split(","):
        ex, at = run(a.scalpel, kind, "exact", extra), run(a.scalpel, kind, "attribution", extra)
        e, t = effects(ex).ravel(), effects(at).ravel()
        ok = np.isfinite(e) & np.isfinite(t)
        e, t = e[ok], t[ok]
        pearson = stats.pearsonr(e, t)[0]
        spearman = stats.spearmanr(e, t)[0]
        top = lambda v: set(np.argsort(-np.abs(v), kind="stable")[:10])
        overlap = len(top(e) & top(t))
        print(f"{kind:6s} cells {len(e):4d}  pearson {pearson:+.3f}  spearman {spearman:+.3f}  top-10 overlap {overlap:2d}/10"
              f"  exact {ex['seconds']:.3f} s  attribution {at['seconds']:.3f} s  ({ex['seconds'] / at['seconds']:.0f}x)")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
