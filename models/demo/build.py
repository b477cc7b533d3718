"""Build the bundled demo from nothing: `python -m lenstop.models.demo.build`.

Stages, each skipped when its output exists (so an interrupted build resumes):
  1. corpus     the standard library's source, split into train and held-out files
  2. tokenizer  a byte-level BPE, and both splits encoded to token ids
  3. model      the GPT-2 (checkpointed every few hundred steps)
  4. saes       one TopK dictionary per layer on the residual stream
  5. transcoders  JumpReLU transcoders MLP input -> output: one a layer, and a cross-layer
                one, in circuit-tracer's format (transcoders/, clt/)
  6. cards      a feature card for every SAE feature: lenstop cards' own pass over the held-out text,
                with a label from what each feature's top contexts share
  7. transcoder-cards  the same for the transcoders' and the CLT's features, beside their
                files (layer_{i}.feature_cards.json.gz, layer_{i}.feature_labels.json)
  8. card       MODEL_CARD.md with every figure measured here
Seeded throughout; `--tiny` runs a reduced configuration in about a minute.

`--only transcoders` reruns that one stage from the model in --out alone (the shipped
one by default), reading the standard library itself when the corpus stage has not
run in --work, and rewrites the transcoder section of an existing MODEL_CARD.md. `--only transcoder-cards`
likewise needs only the model and the transcoders in --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lenstop.models.demo import ARTIFACTS, HOLDOUT_SAMPLE
from lenstop.models.demo.train_model import ModelRecipe
from lenstop.models.demo.train_saes import SaeRecipe
from lenstop.models.demo.train_transcoders import TranscoderRecipe

log = logging.getLogger("lenstop.demo")

STAGES = ("corpus", "tokenizer", "model", "saes", "transcoders", "cards", "transcoder-cards", "card")


@dataclass(frozen=True)
class BuildConfig:
    model: ModelRecipe = field(default_factory=ModelRecipe)
    sae: SaeRecipe = field(default_factory=SaeRecipe)
    transcoder: TranscoderRecipe = field(default_factory=TranscoderRecipe)
    holdout_share: float = 0.05
    limit_files: int | None = None
    card_tokens: int = 400_000  # held-out tokens read for the feature cards
    eval_windows: int = 256  # held-out windows for the figures in the model card
    holdout_sample_chars: int = 60_000  # held-out text shipped for tests and examples

    @classmethod
    def tiny(cls) -> BuildConfig:
        """The whole pipeline in miniature, for its own test."""
        return cls(
            model=replace(
                ModelRecipe(),
                vocab_size=400,
                n_layers=2,
                d_model=32,
                n_heads=4,
                n_ctx=64,
                steps=60,
                eval_every=30,
                warmup=10,
            ),
            sae=replace(SaeRecipe(), d_sae=64, k=8, tokens=20_000, batch=512),
            transcoder=replace(
                TranscoderRecipe(),
                d_transcoder=64,
                clt_features=32,
                target_l0=6,
                tokens=6_000,
                epochs=2,
                batch=128,
                lr=3e-3,
                warmup=10,
            ),
            limit_files=12,
            card_tokens=5_000,
            eval_windows=16,
            holdout_sample_chars=5_000,
        )


class Build:
    def __init__(self, config: BuildConfig, work: Path, out: Path, device: str = "cpu") -> None:
        self.config, self.work, self.out, self.device = config, work, out, device
        work.mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)

    # paths
    @property
    def model_dir(self) -> Path:
        return self.out / "model"

    @property
    def sae_root(self) -> Path:
        return self.out / "saes"

    @property
    def transcoder_root(self) -> Path:
        return self.out / "transcoders"

    @property
    def clt_root(self) -> Path:
        return self.out / "clt"

    def model_ids(self, split: str) -> np.ndarray:
        """`split` encoded with the tokenizer saved beside the model in --out, which is what
        the model read (the tokenizer stage retrains one, which may differ by a merge).

        The text comes from the corpus stage's files when they are in --work, else from the
        standard library itself (the split is deterministic); the ids are kept in --work.
        """
        cached = self.work / f"{split}.model-tokenizer.npy"
        if cached.is_file():
            return np.load(cached)
        from transformers import PreTrainedTokenizerFast

        from lenstop.models.demo.train_model import encode

        tok = PreTrainedTokenizerFast.from_pretrained(self.model_dir)
        ids = encode(tok, self.texts(split))
        np.save(cached, ids)
        return ids

    def texts(self, split: str) -> list[str]:
        """`split`'s files: the corpus stage's in --work, else split from the standard library itself (the
        split is deterministic) and kept in --work."""
        if not (self.work / f"{split}.json").is_file():
            from lenstop.models.demo import corpus

            data = corpus.split(self.config.holdout_share, self.config.limit_files)
            (self.work / "train.json").write_text(json.dumps(data.train))
            (self.work / "holdout.json").write_text(json.dumps(data.holdout))
        return json.loads((self.work / f"{split}.json").read_text())

    def ids(self, split: str) -> np.ndarray:
        return np.load(self.work / f"{split}.npy")

    def tokenizer(self) -> Any:
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(self.work / "tokenizer")

    def hf_model(self) -> Any:
        from transformers import GPT2LMHeadModel

        return GPT2LMHeadModel.from_pretrained(self.model_dir, attn_implementation="eager").eval()

    # stages
    def done(self, stage: str) -> bool:
        return (self.work / f"{stage}.done").is_file()

    def mark(self, stage: str, info: dict | None = None) -> None:
        (self.work / f"{stage}.done").write_text(json.dumps(info or {}, indent=1))

    def run(self, until: str = "card") -> None:
        for stage in STAGES[: STAGES.index(until) + 1]:
            if self.done(stage):
                log.info("stage %s: already done", stage)
                continue
            self.run_stage(stage)

    def run_stage(self, stage: str) -> None:
        """Run `stage` now, whether or not it is done, and record it."""
        log.info("stage %s: starting", stage)
        tic = time.monotonic()
        info = getattr(self, f"stage_{stage.replace('-', '_')}")() or {}
        info["seconds"] = round(time.monotonic() - tic, 1)
        self.mark(stage, info)
        log.info("stage %s: done in %.0f s", stage, info["seconds"])

    def stage_corpus(self) -> dict:
        from lenstop.models.demo import corpus

        data = corpus.split(self.config.holdout_share, self.config.limit_files)
        (self.work / "train.json").write_text(json.dumps(data.train))
        (self.work / "holdout.json").write_text(json.dumps(data.holdout))
        sample = "\n".join(data.holdout)[: self.config.holdout_sample_chars]
        (self.out / "holdout_sample.txt").write_text(sample)
        return {
            "python": sys.version.split()[0],
            "files": data.n_files,
            "bytes": data.n_bytes,
            "train_files": len(data.train),
            "holdout_files": len(data.holdout),
        }

    def stage_tokenizer(self) -> dict:
        from lenstop.models.demo.train_model import encode, train_tokenizer

        train = json.loads((self.work / "train.json").read_text())
        holdout = json.loads((self.work / "holdout.json").read_text())
        tok = train_tokenizer(train, self.config.model.vocab_size, self.work / "tokenizer")
        train_ids, holdout_ids = encode(tok, train), encode(tok, holdout)
        np.save(self.work / "train.npy", train_ids)
        np.save(self.work / "holdout.npy", holdout_ids)
        n_bytes = sum(len(t.encode()) for t in train)
        return {
            "vocab": len(tok),
            "train_tokens": int(len(train_ids)),
            "holdout_tokens": int(len(holdout_ids)),
            "bytes_per_token": n_bytes / len(train_ids),
        }

    def stage_model(self) -> dict:
        from tqdm import tqdm

        from lenstop.models.demo.train_model import train

        tok = self.tokenizer()
        recipe = self.config.model
        bar = tqdm(total=recipe.steps, desc="model", unit="step", disable=not sys.stderr.isatty())

        def progress(step: int, row: dict) -> None:
            bar.n = step
            bar.set_postfix(
                {k: f"{v:.2f}" for k, v in row.items() if k in ("val_loss", "induction_ratio", "induction_score")},
                refresh=False,
            )
            bar.refresh() if step % 50 == 0 else None

        model, history = train(
            recipe,
            self.ids("train"),
            self.ids("holdout"),
            tok.bos_token_id,
            len(tok),
            self.work / "model.ckpt",
            progress,
            self.device,
        )
        bar.close()
        self.model_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(self.model_dir)
        tok.save_pretrained(self.model_dir)
        (self.work / "model_history.json").write_text(json.dumps(history, indent=1))
        return {"steps": recipe.steps, "final": history[-1] if history else {}}

    def stage_saes(self) -> dict:
        from lenstop.models.demo.train_saes import train_all

        results = train_all(
            self.config.sae,
            self.hf_model(),
            self.ids("train"),
            self.tokenizer().bos_token_id,
            self.sae_root,
            self.work,
            self.device,
        )
        return {"layers": results}

    def stage_transcoders(self) -> dict:
        from lenstop.models.demo import metrics, transcoders
        from lenstop.models.demo.model_card import update_transcoder_section
        from lenstop.models.demo.train_transcoders import train_both

        tic = time.monotonic()
        model = self.hf_model()
        bos = model.config.bos_token_id
        per_layer, clt = train_both(self.config.transcoder, model, self.model_ids("train"), bos, self.device)
        train_seconds = round(time.monotonic() - tic, 1)
        transcoders.save_transcoder_set(per_layer, self.transcoder_root)
        transcoders.save_clt(clt, self.clt_root)
        batches = metrics.windows(
            self.model_ids("holdout"), bos, model.config.n_positions, n=self.config.eval_windows, seed=4
        )
        info: dict[str, Any] = {"train_seconds": train_seconds}
        root_of = {"transcoders": self.transcoder_root, "clt": self.clt_root}
        sample = self.out / "holdout_sample.txt"
        prompts = transcoders.held_out_prompts((sample if sample.is_file() else HOLDOUT_SAMPLE).read_text())
        for kind, tc in (("transcoders", per_layer), ("clt", clt)):
            figures = transcoders.quality(model, tc, batches)
            info[kind] = {**asdict(figures), **transcoders.replacement_scores(self.model_dir, root_of[kind], prompts)}
            for row in figures.layers:
                print(
                    f"{kind} layer {row.layer}: fvu {row.fvu:.3f} L0 {row.mean_l0:.1f} dead {row.dead_fraction:.1%}",
                    file=sys.stderr,
                )
        card = self.out / "MODEL_CARD.md"
        if card.is_file():  # a rebuild of this stage alone keeps the card's figures current
            update_transcoder_section(card, self.config, info)
        return info

    def stage_cards(self) -> dict:
        from lenstop.models.demo.feature_cards import build_cards

        holdout = json.loads((self.work / "holdout.json").read_text())
        counts = build_cards(self.model_dir, self.sae_root, holdout, self.config.card_tokens, self.device)
        return {"features": counts}

    def stage_transcoder_cards(self) -> dict:
        """Cards for the transcoders' features: the SAEs' held-out text and budget, the shipped tokenizer."""
        from lenstop.models.demo.feature_cards import build_transcoder_cards

        folders = [self.transcoder_root, self.clt_root]
        counts = build_transcoder_cards(
            self.model_dir, folders, self.texts("holdout"), self.config.card_tokens, self.device
        )
        return {"features": counts}

    def stage_card(self) -> dict:
        from lenstop.models.demo.model_card import write_model_card

        write_model_card(self, self.out / "MODEL_CARD.md")
        return {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lenstop.models.demo.build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--work", type=Path, default=Path(".demo-build"), help="scratch directory (resumable state)")
    parser.add_argument(
        "--out", type=Path, default=ARTIFACTS, help="where the shipped artifacts go (default: inside the package)"
    )
    parser.add_argument("--until", choices=STAGES, default="card", help="stop after this stage")
    parser.add_argument("--redo", choices=STAGES, action="append", default=[], help="run this stage again")
    parser.add_argument(
        "--only", choices=STAGES, help="run just this stage, again, from what --out and --work hold (see above)"
    )
    parser.add_argument("--tiny", action="store_true", help="reduced configuration (minutes), for tests")
    parser.add_argument("--steps", type=int, help="override the model's training steps")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda or cuda:N")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.FileHandler(args.work / "build.log"), logging.StreamHandler()],
    )
    config = BuildConfig.tiny() if args.tiny else BuildConfig()
    if args.steps:
        config = replace(config, model=replace(config.model, steps=args.steps))
    from lenstop.models.loading import resolve_device

    build = Build(config, args.work, args.out, resolve_device(args.device))
    log.info("building on %s", build.device)
    for stage in args.redo:
        (args.work / f"{stage}.done").unlink(missing_ok=True)
    (args.work / "config.json").write_text(json.dumps(asdict(config), indent=1))
    if args.only:
        build.run_stage(args.only)
    else:
        build.run(args.until)


if __name__ == "__main__":
    main()
