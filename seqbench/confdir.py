"""Where seqbench's conf/ directory is, and what it offers: group options and presets.

A leaf on purpose: the CLI, the benchmarks, the Hydra app and the plugin loader all need
these answers, and none of them may have to import the config schemas (and with them the
plugins) or the CLI to get them -- that is how import circles formed before.
"""

from __future__ import annotations

from pathlib import Path

from seqbench.registry import generation


def conf_dir() -> Path:
    """conf/ inside an installed wheel, else the repository's top-level conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError("seqbench's conf/ directory is missing from this installation")


def presets() -> list[str]:
    """The sweep presets (conf/sweep/*.yaml); read each time, as a test may add one."""
    return sorted(p.stem for p in (conf_dir() / "sweep").glob("*.yaml"))


# group -> (registry generation, its options). Asking Hydra costs milliseconds and the
# hostile-input checks ask per override; the files of conf/ do not change while we run,
# but a plugin's registration adds an option, so the answer lasts one generation.
_options: dict[str, tuple[int, tuple[str, ...]]] = {}


def group_options(group: str) -> list[str]:
    """The options of a config group (`optim`, `hydra/launcher`); empty for a plain key.
    A registered plugin's option counts once its registration is stored with Hydra
    (`seqbench.config.ensure_registered`)."""
    now = generation()
    cached = _options.get(group)
    if cached is None or cached[0] != now:
        cached = _options[group] = (now, _ask_hydra(group))
    return list(cached[1])


def _ask_hydra(group: str) -> tuple[str, ...]:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return tuple(sorted(GlobalHydra.instance().config_loader().get_group_options(group)))
