"""`arcscope store` commands: info, verify, ls."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from arcscope.cli.app import app, console, progress_bar
from arcscope.cli.options import QuietOpt, StorageOptionsOpt

store_app = typer.Typer(
    name="store",
    help="Inspect and check activation stores (local folders or fsspec URLs such as s3://).",
    no_args_is_help=True,
)
app.add_typer(store_app, name="store")

UrlArg = Annotated[
    str, typer.Argument(help="Store folder or fsspec URL (s3://bucket/prefix, gs://..., memory://...).")
]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@store_app.command("info")
def info(
    url: UrlArg,
    storage_options: StorageOptionsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Model, hooks, rows, shards, bytes, role and task counts, whether the job finished, and whether the
    files match the manifest (sizes and headers; `store verify` also hashes them). Exit 1 when they do not."""
    from arcscope.store import open_store

    # Sizes and headers only: info stays quick on a big remote store; `store verify` is the full check.
    store = open_store(url, storage_options, verify="size")
    damaged = store.check_shards("size")
    index_files = {s.index for s in store.shards}
    index = None if index_files & set(damaged) else store.index(columns=["task_id", "role"])
    roles = index.column("role").value_counts().to_pylist() if index is not None else []
    summary = {
        "url": store.url,
        "complete": store.complete,
        "model": store.meta.get("model"),
        "tokenizer": store.meta.get("tokenizer"),
        "hooks": {k: {"d": d, "dtype": dt} for k, (d, dt) in store.hooks.items()},
        "rows": store.n_rows,
        "shards": len(store.shards),
        "bytes": store.nbytes,
        "tasks": len(index.column("task_id").unique()) if index is not None else None,
        "roles": {r["values"]: r["counts"] for r in sorted(roles, key=lambda r: -r["counts"])},
        "updated": store.manifest.get("updated"),
        "damaged": damaged,
    }
    if as_json:
        console.print_json(json.dumps(summary))
        if damaged:
            raise typer.Exit(1)
        return
    state = (
        "[green]complete[/]"
        if store.complete
        else "[yellow]incomplete[/] (rerun the `arcscope run` command that wrote it: it resumes by default)"
    )
    console.print(f"[bold]{escape(store.url)}[/]  {state}")
    if damaged:
        console.print(
            f"[red]DAMAGED: {len(damaged)} file(s) do not match the manifest; reads of them will fail[/]"
        )
        for file, why in damaged.items():
            console.print(f"  {escape(file)}: {escape(why)}", highlight=False, soft_wrap=True)
        console.print(
            f"run `arcscope store verify {escape(store.url)}` for the full check (sha256 of every file); "
            "to rebuild the store, rerun the job that wrote it with --overwrite",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"model      {escape(json.dumps(summary['model']))}")
    if summary["tokenizer"]:
        console.print(f"tokenizer  {escape(str(summary['tokenizer']))}")
    tasks = f"{summary['tasks']} tasks" if index is not None else "tasks unknown (an index file is damaged)"
    console.print(
        f"rows       {store.n_rows:,} in {len(store.shards)} shards, {_size(store.nbytes)}, {tasks}"
    )
    console.print("roles      " + ", ".join(f"{escape(str(k))} {v:,}" for k, v in summary["roles"].items()))
    table = Table("hook", "d", "dtype", box=None, pad_edge=False)
    for name, (d, dt) in store.hooks.items():
        table.add_row(escape(name), str(d), dt)
    console.print(table)
    if damaged:
        raise typer.Exit(1)


@store_app.command("verify")
def verify_cmd(
    url: UrlArg,
    storage_options: StorageOptionsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Recompute sizes and sha256 of every listed file and check shapes; exit 1 when anything is damaged."""
    from arcscope.store import verify

    with progress_bar(quiet) as bar:
        report = verify(url, storage_options, progress=bar)
    for i, line in enumerate(report.lines()):
        style = "green" if report.ok else "red"
        if i == 0:
            console.print(f"[{style}]{escape(line)}[/]", highlight=False)
        else:
            console.print(escape(line), highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@store_app.command("ls")
def ls(
    url: UrlArg,
    storage_options: StorageOptionsOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Show whole sha256 digests.")] = False,
) -> None:
    """List committed shards with rows, bytes and sha256 of the shard and index files."""
    from arcscope.store import open_store

    store = open_store(url, storage_options)
    width = 64 if full else 12
    # Plain aligned lines rather than a table: they never wrap or truncate digests and they grep well.
    name_w = max([len(s.file) for s in store.shards] + [5])
    header = f"{'shard':<{name_w}}  {'rows':>10}  {'bytes':>14}  {'sha256':<{width}}  {'index bytes':>12}  index sha256"
    typer.echo(header)
    for s in store.shards:
        typer.echo(
            f"{s.file:<{name_w}}  {s.rows:>10,}  {s.bytes:>14,}  {s.sha256[:width]:<{width}}  "
            f"{s.index_bytes:>12,}  {s.index_sha256[:width]}"
        )
    typer.echo(f"{len(store.shards)} shards, {store.n_rows:,} rows, {_size(store.nbytes)}")
