"""Run the benchmarks side by side and write BENCHMARKS.md.

python -m bench                 full mode: the numbers BENCHMARKS.md reports (minutes)
python -m bench --quick         smoke mode: tiny sizes, checks that every benchmark runs
python -m bench --only serving  one group (training, validation, serving, peers, startup,
                                pipeline, tuning)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mlaas.stores.workspace import Workspace, apply_environment

GROUPS = ("training", "validation", "serving", "peers", "startup", "pipeline", "tuning")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--only", nargs="*", choices=GROUPS, default=list(GROUPS))
    args = parser.parse_args()
    # A workspace of its own, applied before BentoML or Prefect is imported.
    workspace = Workspace(Path(tempfile.mkdtemp(prefix="mlaas-bench-home-")))
    apply_environment(workspace)

    from bench import report

    results = []
    if "training" in args.only:
        from bench.training import data_path, ddp_ranks, training_tax

        results += [training_tax(args.quick), data_path(args.quick), ddp_ranks(args.quick)]
    if "validation" in args.only:
        from bench.validation import validation_throughput

        results += validation_throughput(args.quick)
    if {"serving", "peers", "startup"} & set(args.only):
        from bench.serving import prepare

        # One champion trained and packaged for every serving benchmark.
        target = prepare(workspace, args.quick)
    if "serving" in args.only:
        from bench.serving import batching, default_server, prediction_log, serving_tax, workers

        with default_server(target) as default:
            results += [serving_tax(target, default, args.quick)]
            results += batching(target, default, args.quick)
            results.append(prediction_log(target, default, args.quick))
            results.append(workers(target, default, args.quick))
    if "peers" in args.only:
        from bench.peers import MODELS, peers
        from bench.serving import PROJECT

        # Quick: the image model alone (its servers start in CI's smoke test). The image model
        # is the serving benchmarks' own champion; the others are trained here.
        for key, config, changes, described in MODELS[:1] if args.quick else MODELS:
            served = (
                target
                if key == "mnist"
                else prepare(workspace, args.quick, PROJECT / config, f"bench-{key}", changes)
            )
            for row in peers(served, args.quick, key, described):
                print(report.peer_line(key, row))
    if "startup" in args.only:
        from bench.peers import cold_start
        from bench.pipeline import cli_start

        results += [cli_start(args.quick), cold_start(target, args.quick)]
    if "pipeline" in args.only:
        from bench.pipeline import orchestration_tax, scaling

        results += [*orchestration_tax(workspace, args.quick), *scaling(args.quick)]
    if "tuning" in args.only:
        from bench.tuning import tuning_parallel

        results.append(tuning_parallel(args.quick))
    for comparison in results:
        print(report.line(comparison))
    if not args.quick:
        report.write_markdown(Path("BENCHMARKS.md"))


if __name__ == "__main__":
    main()
