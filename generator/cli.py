"""The generator's commands. Each parses its flags and calls one function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from generator import fleet, operations, publishing, releases, releasing, remotes
from generator.errors import InvalidInput, StoreopsError
from generator.settings import Settings

log = logging.getLogger(__name__)

Command = Callable[[argparse.Namespace, Settings], int]


def _root(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.repo) if args.repo else settings.repo


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    loaded, problems = operations.validate(_root(args, settings), args.base)
    # Entries from before a rule was added: they keep publishing (without what the rule forbids).
    warnings = fleet.callback_problems(loaded)
    if args.json:
        print(json.dumps({"valid": not problems, "problems": [p.as_dict() for p in problems],
                          "warnings": [w.as_dict() for w in warnings]}, indent=2))
        return 1 if problems else 0
    for problem in problems:
        print(problem)
    for warning in warnings:
        print(f"warning: {warning} (its callback is not rendered; change the entry to fix it)")
    if not problems:
        print(f"ok: {len(loaded.store_ids())} stores, {len(loaded.clusters)} clusters, {len(loaded.plans)} plans")
    return 1 if problems else 0


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    report = operations.render(_root(args, settings), repo_url=settings.repo_url,
                               allow_mass_delete=args.allow_mass_delete, share=settings.mass_delete_share)
    changes = report.changes
    print(f"rendered {len(report.fleet.store_ids())} stores: {changes.summary()}; "
          f"{len(changes.files.written)} files written, {len(changes.files.removed)} removed")
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    report = operations.check(_root(args, settings), repo_url=settings.repo_url)
    if not report.changes:
        print(f"ok: rendered/ is up to date for {len(report.fleet.store_ids())} stores")
        return 0
    print("rendered/ is stale; run `storeops render` and commit the result. Differences:")
    for path in report.changes.files.paths:
        print(f"  {path}")
    return 1


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    helm = shutil.which(os.environ.get("STOREOPS_HELM") or "helm")
    result = operations.plan(_root(args, settings), args.base, repo_url=settings.repo_url, helm=helm)
    changes = result.changes
    if args.json:
        print(json.dumps({**changes.as_dict(), "images": {i.store_id: i.as_dict() for i in result.images},
                          "imageChanges": result.image_changes, "diff": result.diff,
                          "charts": {c.engine: c.as_dict() for c in result.charts}}, indent=2))
        return 0
    print(f"plan against {args.base}: {changes.summary()}"
          f"{' in the generated files; charts changed (below)' if result.charts else ''}")
    shown = {i.store_id: i for i in result.images}

    def store_line(line: str, store_id: str) -> None:
        print(line)
        if store_id in shown:
            print(f"      images (from {shown[store_id].source}; * = chart default):")
            for component, image, mine in shown[store_id].images:
                print(f"        {component:<12} {image}{'' if mine else ' *'}")

    for ids, sign in ((changes.added, "+"), (changes.changed, "~"), (changes.removed, "-")):
        for store_id in ids:
            store_line(f"  {sign} {store_id}", store_id)
    for cluster, ids in result.image_changes.items():
        print(f"images of cluster {cluster!r} changed: they apply to every store on it "
              f"({', '.join(ids) or 'none yet'})")
        for store_id in ids:
            if store_id not in changes.added and store_id not in changes.changed:
                store_line(f"  = {store_id} (renders the same: the change is to images its engine does not run)",
                           store_id)
    for chart in result.charts:
        clusters = ", ".join(f"{name}: {count}" for name, count in sorted(chart.by_cluster.items()))
        print(f"chart {chart.engine!r} changed ({len(chart.files)} files: {', '.join(chart.files[:5])}"
              f"{', ...' if len(chart.files) > 5 else ''}): it is the chart of {len(chart.stores)} {chart.engine} "
              f"stores ({clusters or 'none yet'}), each synced again by Argo CD")
        for store_id in chart.stores:
            print(f"  ~ {store_id} (chart)")
        if chart.sample_diff:
            print(f"the change to one of them, {chart.sample}, as helm renders it:")
            print(chart.sample_diff, end="")
        elif chart.sample:
            print(f"  one of them, {chart.sample}, renders the same with helm: the change does not reach its "
                  f"manifests")
        elif chart.stores and not helm:
            print("  (set STOREOPS_HELM or put helm on PATH to see the rendered change of one of them)")
    if result.diff:
        print()
        print(result.diff, end="")
    return 0


def cmd_release(args: argparse.Namespace, settings: Settings) -> int:
    root = _root(args, settings)
    version = releasing.release(root, args.engine)
    print(f"released {args.engine} {version} into {releases.release_dir(args.engine, version)} (with "
          f"{releases.digest_path(args.engine, version)}). Commit both; stores move to it with\n"
          f"  storeops rollout start --engine {args.engine} --version {version} [--cluster NAME] [--canary N] "
          f"[--batch N]\nor one by one with chartVersion: {version} in their entries.")
    return 0


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    result = publishing.publish(settings, allow_mass_delete=args.allow_mass_delete)
    if result.committed:
        print(f"published {result.sha}: {result.changes.summary()}")
    else:
        print(f"up to date at {result.sha or '(empty branch)'}: nothing to publish")
    return 0


def cmd_rotate_password(args: argparse.Namespace, settings: Settings) -> int:
    root = _root(args, settings)
    count = operations.rotate_password(root, args.store_id, repo_url=settings.repo_url)
    print(f"{args.store_id}: adminPasswordRotation is now {count} in {root / 'stores' / (args.store_id + '.yaml')}, "
          f"and its rendered files are updated. Commit and push it (or open a pull request): once Argo CD synced "
          f"the store, its admin has a new password, and the owner's next credentials link shows it. Through the "
          f"service instead: POST /v1/stores/{args.store_id}/credentials/rotate")
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    root = _root(args, settings)
    revision = operations.rollback(root, args.store_id, revision=args.to or "", repo_url=settings.repo_url)
    print(f"{args.store_id}: its entry is back as at {revision[:12]} (its password count kept), and its rendered "
          f"files are updated. Commit it with the reason, e.g.\n"
          f"  git commit -am 'Roll back {args.store_id} to {revision[:12]}: <why>'\n"
          f"Through the service instead (it knows when the store was last ready): "
          f"POST /v1/stores/{args.store_id}/rollback")
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the generator's commands on a parser (the service adds its own beside them)."""

    def command(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(func=func)
        return parser

    def with_repo(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--repo", help="the checkout holding stores/ and clusters/ (default: STOREOPS_REPO or .)")
        return parser

    validate = with_repo(command("validate", cmd_validate, "check every store entry, cluster and plan"))
    validate.add_argument("--json", action="store_true", help="print the problems as JSON")
    validate.add_argument("--base", help="git revision to compare with: existing stores may not change engine "
                                         "or cluster (a pull request's base, say)")
    render = with_repo(command("render", cmd_render, "render rendered/ from the inputs"))
    render.add_argument("--allow-mass-delete", action="store_true",
                        help="remove more stores at once than STOREOPS_MASS_DELETE_SHARE allows")
    with_repo(command("check", cmd_check, "exit 1 if the committed rendered/ is stale"))
    plan = with_repo(command("plan", cmd_plan, "stores added, changed and removed, and the diff of rendered/"))
    plan.add_argument("--base", default="HEAD", help="git revision to compare with (default: HEAD)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    rotate = with_repo(command("rotate-password", cmd_rotate_password,
                               "give a store's shop admin a new password: raise its adminPasswordRotation "
                               "and re-render it in the checkout, for you to commit"))
    rotate.add_argument("store_id", metavar="STORE_ID", help="the store's id")
    rollback = with_repo(command("rollback", cmd_rollback,
                                 "put a store's entry back as it was before its last change (or at --to), "
                                 "re-rendered in the checkout, for you to commit"))
    rollback.add_argument("store_id", metavar="STORE_ID", help="the store's id")
    rollback.add_argument("--to", help="the revision to go back to (default: the version before the entry's "
                                       "last change)")
    release = with_repo(command("release", cmd_release,
                                "snapshot the working chart of an engine (and the library) as an immutable release "
                                "named for its Chart.yaml version, for stores to be pinned to"))
    release.add_argument("engine", metavar="ENGINE", help="the engine whose chart to release (templates/ENGINE)")
    publish = command("publish", cmd_publish,
                      "render the remote's inputs, commit and push (STOREOPS_REMOTE; a local remote by default)")
    publish.add_argument("--allow-mass-delete", action="store_true",
                         help="remove more stores at once than STOREOPS_MASS_DELETE_SHARE allows")


def build_parser(extra: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] | None = None,
                 ) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storeops", description="Run a fleet of stores on Kubernetes with GitOps.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(subparsers)
    if extra:
        extra(subparsers)
    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse, run one command; known errors print without a traceback and exit 1."""
    args = parser.parse_args(argv)
    remotes.install_log_redaction()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        code: int = args.func(args, settings)
        return code
    except InvalidInput as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1
    except StoreopsError as e:
        print(f"storeops: {remotes.redact(str(e))}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)
