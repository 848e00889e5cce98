"""What the commands share: the run-folder layout, bad-input errors, ``--set`` parsing, loading a run."""

from __future__ import annotations

import argparse
import json
import tomllib
from collections.abc import Sequence
from pathlib import Path

CONFIG, CHECKPOINT, MODEL, METRICS = "config.toml", "checkpoint.pt", "model.pt", "metrics.json"
DATA_HELP = ("data set: dsprites, mnist, fashion-mnist (IDX files in data/<name> or data.root), npz:PATH "
             "(an .npz with an 'images' array) or idx:DIR (a folder with the four MNIST-style IDX files)")


class UsageError(ValueError):
    """Bad input to a command; printed as ``sgm <command>: error: ...`` with exit status 2."""


def device(cfg_device: str, override: str | None):
    """The torch device of a run: ``--device``, else the config's, else CUDA when available."""
    from ..devices import resolve_device
    try:
        return resolve_device(override or cfg_device or None)
    except ValueError as e:
        raise UsageError(str(e)) from e


def parse_set(items: Sequence[str]) -> dict:
    """``["inference.lr=1e-3", "data.name=mnist"]`` -> nested dict; values are TOML, else strings."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        set_path(out, key.strip(), value)
    return out


def set_path(tree: dict, dotted: str, value) -> None:
    """``set_path(d, "data.name", v)`` sets ``d["data"]["name"] = v``, creating tables on the way."""
    *parents, last = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def merge(base: dict, over: dict) -> dict:
    """``over`` merged into ``base`` (in place), table by table."""
    for k, v in over.items():
        # a table merges into a table (--set model.prior_kwargs={} empties it)
        base[k] = merge(dict(base[k]), v) if isinstance(v, dict) and v and isinstance(base.get(k), dict) else v
    return base


def run_folder(path: str) -> Path:
    """The run folder named by ``path``; a file inside one (``runs/x/config.toml``) names its folder."""
    run = Path(path)
    if run.is_file() and run.name in (CONFIG, CHECKPOINT, MODEL, METRICS):
        return run.parent
    if run.is_file():
        raise FileNotFoundError(f"{str(run)!r} is a file; pass the run folder that holds it ({str(run.parent)!r})")
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {str(run)!r} does not exist")
    return run


def run_dir(path: str, need: str) -> Path:
    """The run folder ``path`` (see :func:`run_folder`), which must hold the file ``need``."""
    run = run_folder(path)
    if not (run / need).is_file():
        hint = f" (finish training first: sgm fit --resume {run})" if need == MODEL else ""
        raise FileNotFoundError(f"no {need} in {str(run)!r}{hint}")
    return run


def update_metrics(out: Path, key: str, value: dict) -> None:
    """Set ``metrics.json[key] = value`` in ``out``, keeping the other entries."""
    path = out / METRICS
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics[key] = value
    path.write_text(json.dumps(metrics, indent=2))


def load_run(args: argparse.Namespace):
    """The run's config (with ``--data``/``--n-test`` overrides), model and device, for evaluate/sample/plot."""
    from ..config import RunConfig, absolute_data_paths, from_dict, load_config, to_dict
    from ..models import SGM

    run = run_dir(args.run, MODEL)
    cfg = load_config(run / CONFIG) if (run / CONFIG).is_file() else RunConfig()
    data: dict = {}
    if getattr(args, "data", None):
        data["name"] = args.data
    if getattr(args, "n_test", None) is not None:
        data["n_test"] = args.n_test
    cfg = absolute_data_paths(from_dict(RunConfig, merge(to_dict(cfg), {"data": data} if data else {})))
    dev = device(cfg.device, args.device)
    model = SGM.load(run / MODEL, map_location=dev)
    return run, cfg, model, dev


def load_test_images(cfg, dev):
    """The run's data with its test images (``UsageError`` when ``data.n_test`` is 0)."""
    from ..experiments.run_data import load_run_data
    data = load_run_data(cfg, cfg.inference.batch_size, dev)
    if data.test is None:
        raise UsageError("data.n_test is 0: there are no test images (pass --n-test)")
    return data


def add_out_device(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help=out_help)
    p.add_argument("--device", default=None,
                   help="torch device, e.g. cpu or cuda:0 (default: the config's device, else cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_run_reader(sub, name: str, help_: str, description: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=description)
    p.add_argument("run", metavar="DIR", help="run folder written by sgm fit (holds config.toml and model.pt)")
    add_out_device(p, "where to write the outputs (default: the run folder)")
    p.add_argument("--data", default=None, help=DATA_HELP + " (default: the run's own data set)")
    p.add_argument("--n-test", type=int, default=None, help="number of test images (default: data.n_test of the run)")
    return p
