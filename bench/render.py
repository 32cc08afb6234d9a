"""Render benchmark: N synthetic stores, every figure measured side by side in one run.

    python bench/render.py [--stores 10000]

Prints
  (a) cold: load + validate + render + write of all N stores, in a fresh process;
  (b) the I/O floor: reading the same N input files and writing the same output bytes, nothing else;
  (c) one store changed among N: re-check (every cross-entry rule) and re-render, write its files;
  (d) peak memory (max RSS) of the process doing (a) and (c);
  (e) publish of one changed store into a remote holding N stores, and the files git restaged;
and the ratios against the targets: (a) <= 5x (b), (c) <= 2% of (a), (d) <= 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator import operations, publishing, trees, validation  # noqa: E402
from generator.settings import Settings  # noqa: E402

ENGINES = validation.engines()
PLANS = ("small", "medium", "large")
STORE = """\
# yaml-language-server: $schema=../generator/schemas/store.schema.json
id: {id}
name: Store number {n}
engine: {engine}
plan: {plan}
cluster: {cluster}
owner:
  name: Owner {n}
  email: owner{n}@example.com
  github: owner{n}
state: {state}
"""


def make_repo(root: Path, count: int) -> None:
    """A GitOps checkout with ``count`` stores spread over two clusters sized to hold them."""
    for folder in ("templates", "generator/schemas"):
        shutil.copytree(ROOT / folder, root / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "clusters").mkdir()
    for name in ("local", "prod"):
        text = (ROOT / "clusters" / f"{name}.yaml").read_text()
        text = text.replace("stores: 20", f"stores: {count}").replace("stores: 500", f"stores: {count}")
        text = text.replace('cpu: "40"', f'cpu: "{count * 4}"').replace('cpu: "1000"', f'cpu: "{count * 4}"')
        for memory in ("memory: 80Gi", "memory: 2000Gi"):
            text = text.replace(memory, f"memory: {count * 8}Gi")
        (root / "clusters" / f"{name}.yaml").write_text(text)
    (root / "stores").mkdir()
    for n in range(count):
        store_id = f"store-{n:05d}"
        (root / "stores" / f"{store_id}.yaml").write_text(STORE.format(
            id=store_id, n=n, engine=ENGINES[n % 2], plan=PLANS[n % 3], cluster=("local", "prod")[n % 2],
            state="suspended" if n % 10 == 0 else "active"))


def child_cold(repo: str) -> None:
    """(a) and (c) in this fresh process; prints JSON."""
    root = Path(repo)
    start = time.perf_counter()
    loaded = operations.load(root)
    files = operations.render_files(loaded)
    trees.write_rendered(root, files, current={})
    cold = time.perf_counter() - start

    path = "stores/store-00042.yaml"
    changed = (root / path).read_text().replace("plan: small", "plan: large").replace("plan: medium", "plan: large")
    changed = changed.replace("Store number 42", "Store number 42, renamed")
    (root / path).write_text(changed)
    start = time.perf_counter()
    _, changes = operations.update_store(root, loaded, path, changed)
    incremental = time.perf_counter() - start
    assert changes.written, "the changed store rendered no new bytes"
    print(json.dumps({"cold": cold, "incremental": incremental, "files": len(files),
                      "written": len(changes.written),
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def child_floor(repo: str, output: str) -> None:
    """(b): read the inputs, write the same output bytes; no parsing or rendering."""
    root = Path(repo)
    rendered = {p: c for p, c in trees.read_rendered(Path(output)).items()}
    start = time.perf_counter()
    inputs = trees.read_inputs(root)
    base = root / "rendered"
    for path, content in rendered.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            f.write(content)
    floor = time.perf_counter() - start
    assert len(inputs) > 0 and base.is_dir()
    print(json.dumps({"floor": floor}))


def run_child(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


def bench_publish(work: Path, count: int) -> dict[str, float]:
    """(e): a remote with ``count`` rendered stores; one store changes; publish it."""
    source = work / "pub-src"
    make_repo(source, count)
    operations.render(source)
    env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    os.environ.update(env)
    git(source, "init", "-q", "-b", "main")
    git(source, "add", "-A")
    git(source, "commit", "-qm", "fleet")
    remote = work / "pub-remote.git"
    git(work, "clone", "-q", "--bare", str(source), str(remote))
    settings = Settings(remote=str(remote), state_dir=work / "pub-state")
    publishing.publish(settings)  # clone the work tree once, as a running service has it

    def edit(root: Path) -> list[str]:
        path = root / "stores/store-00007.yaml"
        path.write_text(path.read_text().replace("Store number 7\n", "Store number 7, renamed\n"))
        return ["stores/store-00007.yaml"]

    start = time.perf_counter()
    result = publishing.publish(settings, edit=edit)
    seconds = time.perf_counter() - start
    committed = git(remote, "show", "--name-only", "--format=", "main").splitlines()
    assert result.committed
    return {"publish": seconds, "publish_files": len(committed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", type=int, default=10_000)
    parser.add_argument("--child", choices=["cold", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "cold":
        child_cold(args.repo)
        return
    if args.child == "floor":
        child_floor(args.repo, args.output)
        return

    with tempfile.TemporaryDirectory(prefix="storeops-bench-") as tmp:
        work = Path(tmp)
        print(f"making {args.stores} synthetic stores ...", flush=True)
        make_repo(work / "a", args.stores)
        shutil.copytree(work / "a", work / "b", symlinks=True)
        cold = run_child("--child", "cold", "--repo", str(work / "a"))
        floor = run_child("--child", "floor", "--repo", str(work / "b"), "--output", str(work / "a"))
        publish = bench_publish(work, args.stores)

    a, b, c, d = cold["cold"], floor["floor"], cold["incremental"], cold["maxrss_mb"]
    rows = [
        ("(a) cold load+validate+render+write", f"{a:8.3f} s", f"{int(cold['files'])} files"),
        ("(b) I/O floor (read inputs, write same bytes)", f"{b:8.3f} s", ""),
        ("(c) one store changed: re-check all, re-render one", f"{c * 1000:8.2f} ms",
         f"{int(cold['written'])} files written"),
        ("(d) peak memory (max RSS)", f"{d:8.1f} MB", ""),
        ("(e) publish one changed store", f"{publish['publish']:8.3f} s",
         f"{int(publish['publish_files'])} files in the commit"),
    ]
    print(f"\nrender benchmark, {args.stores} stores")
    for name, value, note in rows:
        print(f"  {name:<52} {value:>12}  {note}")
    checks = [
        ("(a) / (b)", a / b, 5.0, "x"),
        ("(c) / (a)", c / a * 100, 2.0, "%"),
        ("(d)", d, 500.0, " MB"),
    ]
    print("\ntargets")
    ok = True
    for name, value, limit, unit in checks:
        passed = value <= limit
        ok &= passed
        print(f"  {name:<10} {value:8.2f}{unit:<3} <= {limit:g}{unit}  {'ok' if passed else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
