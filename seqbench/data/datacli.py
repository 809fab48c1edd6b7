"""`python -m seqbench data list | fetch NAME [NAME...] | verify [NAME...]`.

Downloading is a command of its own, never a side effect of training: a sweep validates
all its jobs first, and a cluster node may have no network. `fetch` is the only command
that downloads; `verify` hashes what is cached and repairs the token cache offline.

Exit status: 0 done; 2 bad input (an unknown corpus name, a bad option), with one line
naming the value and what is allowed; 1 a download or a verification failed, with one
line naming the URL, the expected checksum and where to place the file by hand.
"""

from __future__ import annotations

import argparse
import os
import sys

from seqbench.data import corpora
from seqbench.errors import ArgumentParser, ConfigError, parse_args


def _parser() -> argparse.ArgumentParser:
    names = ", ".join(corpora.CORPORA)
    parser = ArgumentParser(prog="python -m seqbench data",
                     description="Download, convert and check the text corpora "
                                 f"({names}). Cache: $SEQBENCH_DATA, default "
                                 "the user cache directory.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,fetch,verify}")
    sub.add_parser("list", help="every corpus: size, split, source, licence, cache state")
    fetch = sub.add_parser("fetch", help="download, check and convert corpora (once)")
    fetch.add_argument("names", nargs="+", metavar="NAME", help=names)
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    verify = sub.add_parser("verify", help="hash the cached files; rebuild a damaged cache")
    verify.add_argument("names", nargs="*", metavar="NAME",
                        help="default: every corpus with something in the cache")
    return parser


def main(argv: list[str]) -> int:
    ns = parse_args(_parser(), argv, "seqbench data")
    if isinstance(ns, int):
        return ns
    for name in getattr(ns, "names", []):
        if name not in corpora.CORPORA:
            return _error(str(ConfigError("corpus", name,
                                          "one of " + ", ".join(corpora.CORPORA))), 2)
    return {"list": cmd_list, "fetch": cmd_fetch, "verify": cmd_verify}[ns.command](ns)


def _error(message: str, code: int) -> int:
    print(f"seqbench data: error: {message}", file=sys.stderr)
    return code


def cmd_list(ns) -> int:
    rows = [("NAME", "SIZE", "SPLIT (train/val/test)", "CACHED", "CHECKSUM")]
    details = []
    for name, spec in corpora.CORPORA.items():
        st = corpora.status(name)
        cached = st["cached"]
        if st["tokens"] is not None:
            cached += f" ({st['tokens']:,} tokens, vocab {st['vocab_size']})"
        rows.append((name, spec.size, spec.split, cached, st["checksum"]))
        details.append((f"source: {spec.url}", f"license: {spec.license}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    print(f"data cache: {corpora.cache_dir()} (set ${corpora.ENV_DIR} to move it)")
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        if i:
            for line in details[i - 1]:
                print(" " * (widths[0] + 2) + line)
    print("trust on first use: with no published checksum, the SHA-256 of the first good "
          "download is recorded and every later download must match it.")
    return 0


def cmd_fetch(ns) -> int:
    from seqbench.rundir import unwritable

    problem = unwritable(corpora.cache_dir())
    if problem is not None:  # before any download: where it would land is bad input
        where = f"${corpora.ENV_DIR}" if os.environ.get(corpora.ENV_DIR) else "data cache"
        return _error(f"{where}={corpora.cache_dir()}: cannot be written: {problem}", 2)
    failed = 0
    for name in dict.fromkeys(ns.names):
        bar = RichBar(name) if not ns.no_progress and sys.stderr.isatty() else False
        try:
            corpus = corpora.fetch(name, progressbar=bar)
        except corpora.DataUnavailableError as e:
            _error(str(e), 1)
            failed += 1
            continue
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in corpus.ids.items())
        unknown = sum(corpus.unknown.values())
        print(f"{name}: ready ({sizes} tokens; vocabulary {corpus.vocab.size}"
              f"{f'; {unknown:,} unknown in val/test' if unknown else ''}) {corpus.path.parent}")
    return 1 if failed else 0


def cmd_verify(ns) -> int:
    names = list(dict.fromkeys(ns.names)) or corpora.cached_names()
    failed = 0
    for name in names:
        try:
            print(corpora.verify(name))
        except corpora.DataUnavailableError as e:
            _error(str(e), 1)
            failed += 1
    return 1 if failed else 0


class RichBar:
    """The progress-bar protocol of pooch's HTTPDownloader (`total`, `update`, `reset`,
    `close`), drawn with rich: pooch's own bar needs tqdm, which seqbench does not need."""

    def __init__(self, label: str):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(TextColumn(label), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(),
                                  console=Console(stderr=True))
        self._task = None
        self._total: int | None = None

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = value or None  # 0: the server sent no Content-Length
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("", total=self._total)

    def update(self, n: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def reset(self) -> None:
        if self._task is not None:
            self._progress.reset(self._task, total=self._total)

    def close(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None
