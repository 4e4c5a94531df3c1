"""Shared fixtures. Everything here is offline and built in code (tiny models, byte tokenizers)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import dataclasses  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from lab.gem import GemConfig, GemModel, add_new_gem_tokens  # noqa: E402
from lab.weights import load_causal_lm  # noqa: E402
from lab.weights.registry import DEFAULT_GEM, SHIPPED_GEM  # noqa: E402

ARCHS = ["llama", "qwen2", "gemma3"]
SHIPPED = SHIPPED_GEM[DEFAULT_GEM]


def tiny_gem(arch: str, k: int = 1, attn_implementation: str = "sdpa", **config) -> GemModel:
    """A tiny random model of `arch` with k fresh GEM tokens, marked trained so every API runs."""
    model, tok = load_causal_lm(f"tiny-{arch}", attn_implementation=attn_implementation)
    gem = add_new_gem_tokens(GemModel(model, tok, None, name=f"tiny-{arch}"), k=k, **config)
    gem.gem_config.trained = True
    # Fresh GEM rows are the mean embedding: give them distinct random values so tests can tell
    # the k tokens apart (a trained model's rows differ too).
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        emb = gem.model.get_input_embeddings().weight
        emb[gem.special_ids] = torch.randn(k, emb.shape[1]) * emb.std()
    return gem


def shipped_gem_config() -> GemConfig:
    """The shipped checkpoint's GEM settings (its gem_config.json), read at test time: a change to
    what ships changes what the tests run."""
    return GemConfig.load(SHIPPED)


def shipped_like_gem(max_length: int | None = None) -> GemModel:
    """A tiny model configured like the shipped one: `tiny-smollm2` (SmolLM2's tokens, no BOS)
    with the shipped checkpoint's k, sink token, readout and readout head (its width too), the
    head's weights random but fixed. What the app, the course and the CLI are tested on."""
    shipped = shipped_gem_config()
    config = dataclasses.replace(shipped, base_model="tiny-smollm2", max_length=max_length or shipped.max_length)
    model, tok = load_causal_lm("tiny-smollm2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        gem = add_new_gem_tokens(GemModel(model, tok, None, name="tiny-smollm2"), config=config)
        emb = gem.model.get_input_embeddings().weight
        with torch.no_grad():
            emb[gem.special_ids] = torch.randn(config.k, emb.shape[1]) * emb.std()
    gem.gem_config.trained = True
    return gem


def fake_teacher(texts: list[str], dim: int = 16):
    """A deterministic stand-in distillation teacher: (n, dim) unit embeddings from each text's bytes."""
    out = torch.zeros(len(texts), dim)
    for i, t in enumerate(texts):
        for ch in t.encode():
            out[i, ch % dim] += 1
    return torch.nn.functional.normalize(out + 1e-3, dim=-1).numpy()


@pytest.fixture(params=ARCHS)
def arch(request):
    return request.param


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never touch the user's cache: GEM_LAB_CACHE points at a per-test temporary folder."""
    monkeypatch.setenv("GEM_LAB_CACHE", str(tmp_path_factory.mktemp("cache")))


def flat_config(**settings):
    """A TrainConfig from the settings' short names (k=, steps=, p_plain=, ...; each maps to one
    dotted key, `lab.training.config.FLAT_KEYS`), to keep tests short."""
    from lab.training.config import TrainConfig
    from lab.training.config_files import FLAT_KEYS, migrate_flat

    dropped = [k for k in settings if k in FLAT_KEYS and FLAT_KEYS[k] is None]
    if dropped:
        raise TypeError(f"{dropped} are not config settings: pass them to GemCollator / GemObjective")
    return TrainConfig.from_dict(migrate_flat(settings))


def with_flat(cfg, **settings):
    """`cfg` with settings given by their short names (see `flat_config`)."""
    from lab.training.config_files import FLAT_KEYS

    return cfg.updated({FLAT_KEYS[k]: v for k, v in settings.items()})


def fp32_app_session(gem_folder):
    """The app's Session on `tiny-smollm2` and the GEM checkpoint in `gem_folder`, both in fp32 on
    every CPU (a CPU with native bf16 would load bf16 by itself; tests/test_app_views.py checks that
    case): the app's verdicts on a random tiny model must not depend on the machine."""
    from lab.app.handlers import Session
    from lab.weights.loading import load

    return Session("tiny-smollm2", str(gem_folder), base=load("tiny-smollm2", dtype="float32"),
                   gem=load(str(gem_folder), dtype="float32"))
