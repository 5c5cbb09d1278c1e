"""Run an atheris harness: ``python fuzz/run.py cube|dicom|stow|lake|codestream [--minutes M | --seconds S |
--runs N]`` (the server harness is ``fuzz/server.py``: an archive in its process driven through its ASGI app, not
libFuzzer; per-frame time and memory are measured by ``fuzz/bounds.py``).

Seeds come from ../shared/data (fuzz/corpus/<target>/, built on first use, not committed); what the fuzzer adds
to the corpus stays there. A finding is written to fuzz/crashes/<target>/ — copy it to fuzz/regressions/<target>/
once fixed, where the normal test suite replays it. Runs on one core (libFuzzer's default); memory is capped at
2 GB and each input at 20 s (2 s for ``codestream``: the bound a frame's decoding must keep). The last line says
how many executions were done.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ["RUST_BACKTRACE"] = "0"  # a Rust panic (a finding only if it escapes) prints one line, not a backtrace
warnings.filterwarnings("ignore")  # pydicom's warnings about the inputs: millions of lines otherwise
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=["cube", "dicom", "stow", "lake", "codestream"])
    parser.add_argument("--minutes", type=float, default=0)
    parser.add_argument("--seconds", type=float, default=0)
    parser.add_argument("--runs", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--replay", type=Path, nargs="+", help="run these inputs once, without the fuzzer")
    args, extra = parser.parse_known_args()
    if args.replay:
        import harnesses

        for path in args.replay:
            print(path)
            harnesses.TARGETS[args.target](path.read_bytes())
        return
    import atheris

    with atheris.instrument_imports(include=["cubepacs"]):
        import harnesses

        harnesses.preload()  # the modules the targets import lazily, imported here so that they are instrumented
    import seeds

    corpus = seeds.build(args.target, args.corpus or HERE / "corpus" / args.target)
    crashes = HERE / "crashes" / args.target
    crashes.mkdir(parents=True, exist_ok=True)
    seconds = int(args.minutes * 60 + args.seconds)
    timeout = 2 if args.target == "codestream" else 20
    flags = [sys.argv[0], str(corpus), f"-artifact_prefix={crashes}/", "-rss_limit_mb=2048", f"-timeout={timeout}",
             "-print_final_stats=1", *extra]
    if seconds:
        flags.append(f"-max_total_time={seconds}")
    if args.runs:
        flags.append(f"-runs={args.runs}")
    mutator = harnesses.MUTATORS.get(args.target)
    if mutator is not None:
        atheris.Setup(flags, harnesses.TARGETS[args.target], custom_mutator=mutator)
    else:
        atheris.Setup(flags, harnesses.TARGETS[args.target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
