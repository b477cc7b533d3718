"""The loaded model and its dictionaries, as every part that runs the model needs them.

`ModelHandle` owns what is shared: the lock (hooks are attached to one shared
model for the duration of a pass), `hooks()`, the guard that turns running out of
memory into one line, the devices, tokens and the facts of the model's shape.
Reading, generation and the circuits each take a handle; none of them takes the
`Engine`, which is a façade over them.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from lenstop.models import dictionaries as dicts
from lenstop.models.demo import DEMO_NAME
from lenstop.models.dictionaries import Dictionaries, Dictionary
from lenstop.models.errors import (
    IncompatibleError,
    LenstopError,
    NumericError,
    OutOfMemoryError,
    UsageError,
    allocation,
    is_out_of_memory,
)
from lenstop.models.interventions import Intervention
from lenstop.models.loading import Processing, load_model
from lenstop.models.prompts import check_text
from lenstop.models.protocol import Progress
from lenstop.models.quiet import quiet
from lenstop.models.results import DictionaryInfo, ModelInfo
from lenstop.models.tokens import token_texts

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

HookFn = Callable[..., Any]
_HOOK_LEVELS = itertools.count(7_000_001)  # lenstop's own levels: removing its hooks leaves anyone else's in place
_LOAD_ADVICE = "try --dtype bfloat16, --n-devices N or --device-map auto"
_RUN_ADVICE = "shorten the prompt, load with --dtype bfloat16, or spread the model with --n-devices"


class ModelHandle:
    """A model, its dictionaries, and the one lock every pass over them takes."""

    def __init__(
        self,
        model: TransformerBridge,
        dictionaries: Sequence[Dictionary] = (),
        *,
        name: str | None = None,
        processing: Processing | None = None,
        prepend_bos: bool | None = None,
    ) -> None:
        self.model = model
        # A Dictionaries passed whole keeps its cross-layer transcoder, if any.
        self.dictionaries = dictionaries if isinstance(dictionaries, Dictionaries) else Dictionaries(dictionaries)
        self.name = name or str(model.cfg.model_name)
        self.processing = processing or Processing()
        self.prepend_bos = bool(getattr(model.cfg, "default_prepend_bos", True)) if prepend_bos is None else prepend_bos
        self.model.requires_grad_(False)  # lenstop never trains: gradients are taken at activations only
        self.lock = threading.RLock()
        # Told when a pass runs out of memory, so that what their caches hold goes with the failed pass.
        self.on_out_of_memory: list[Callable[[], None]] = []
        self._token_strings: dict[int, str] = {}
        self._longest_token: int | None = None  # in characters: how long a prompt can be and still fit
        self._hook_points: dict[str, Any] | None = None  # the bridge rebuilds its hook_dict on every access
        self._pattern_keepers: list[torch.nn.Module] | None = None

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        model: str,
        saes: Sequence[str] = (),
        *,
        device: str = "auto",
        dtype: str = "float32",
        n_devices: int | None = None,
        device_map: str | dict[str, str | int] | None = None,
        progress: Progress | None = None,
    ) -> ModelHandle:
        """Load `model` and every dictionary in `saes`, matched to the numerics they were trained on; the demo
        model comes with its own dictionaries unless others are named. Out of memory is one line."""
        if model == DEMO_NAME and not saes:
            saes = [DEMO_NAME]
        say = progress or (lambda _msg: None)
        try:
            with quiet():
                say(f"loading model {model}")
                bridge = load_model(model, device=device, dtype=dtype, n_devices=n_devices, device_map=device_map)
                loaded = Dictionaries.joined(
                    dicts.load_spec(spec, device="cpu", dtype="float32", progress=say) for spec in saes
                )
                handle = cls._processed(bridge, loaded, model, say)
        except Exception as err:  # out of memory anywhere in the load, the model's or a dictionary's
            if isinstance(err, LenstopError) or not is_out_of_memory(err):
                raise
            raise out_of_memory_error(f"loading {model} in {dtype}", err, _LOAD_ADVICE) from err
        say("ready")
        return handle

    @classmethod
    def _processed(cls, bridge: TransformerBridge, loaded: Dictionaries, name: str, say: Progress) -> ModelHandle:
        """The model's weights processed as the dictionaries expect, and the dictionaries checked and attached.
        A cross-layer transcoder asks for no processing (circuit-tracer's models are unprocessed)."""
        processing = dicts.agreed_processing(list(loaded))
        if not processing.is_raw:
            say("processing weights to match the dictionaries")
            bridge.enable_compatibility_mode(
                disable_warnings=True,
                fold_ln=processing.fold_ln,
                center_writing_weights=processing.center_writing_weights,
                center_unembed=processing.center_unembed,
                fold_value_biases=processing.fold_value_biases,
                refactor_factored_attn_matrices=processing.refactor_factored_attn_matrices,
            )
        prepend_bos = dicts.agreed_prepend_bos(list(loaded))
        if prepend_bos is None and loaded.cross_layer is not None:
            prepend_bos = True  # circuit-tracer always puts BOS first
        handle = cls(bridge, loaded, name=name, processing=processing, prepend_bos=prepend_bos)
        if loaded or loaded.cross_layer is not None:
            say("checking dictionaries against the model")
            handle._attach_dictionaries()
        return handle

    def _attach_dictionaries(self) -> None:
        """Validate hooks and widths with one probe pass, then move each SAE beside its layer (and a cross-layer
        transcoder beside the first)."""
        clt = self.dictionaries.cross_layer
        hooks = {h for d in self.dictionaries for h in (d.hook_in, d.hook_out)}
        if clt is not None:
            hooks |= {h for layer in range(clt.n_layers) for h in (clt.input_hook(layer), clt.output_hook(layer))}
        missing = [h for h in hooks if h not in self.model.hook_dict]
        widths: dict[str, int] = {}

        def measure(name: str) -> HookFn:
            def hook(tensor: torch.Tensor, hook: Any) -> None:
                widths[name] = dicts.flat_width(tensor, name)

            return hook

        probe = self.model.to_tokens("a", prepend_bos=True)[:, :1]
        with self.lock, torch.no_grad(), self.hooks([(h, measure(h)) for h in hooks if h not in missing]):
            self.model(probe)
        dicts.validate(list(self.dictionaries), widths, self.name)
        dtype = self.model.cfg.dtype
        if clt is not None:
            dicts.validate_cross_layer(clt, widths, self.n_layers, self.name)
            clt.to(device=self.layer_device(0), dtype=dtype)
        for d in self.dictionaries:
            d.sae.to(device=self.layer_device(d.layer), dtype=dtype)
            d.sae.eval()
            d.sae.requires_grad_(False)

    # ---------------------------------------------------------------- facts
    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.cfg.n_heads)

    @property
    def n_ctx(self) -> int:
        return int(self.model.cfg.n_ctx)

    def layer_device(self, layer: int) -> torch.device:
        """Where block `layer`'s weights are: a dictionary of that layer works there."""
        param = next(self.model.blocks[layer].parameters(), None)
        return param.device if param is not None else torch.device(str(self.model.cfg.device))

    @property
    def out_device(self) -> torch.device:
        """Where the unembedding is: the logits are made there."""
        param = next(self.model.unembed.parameters(), None)
        return param.device if param is not None else torch.device(str(self.model.cfg.device))

    def check_layers(self, layers: Sequence[int]) -> list[int]:
        """The layers asked for, sorted and unique, each checked against the model's."""
        wanted = sorted({int(layer) for layer in layers})
        if wanted and not 0 <= wanted[0] <= wanted[-1] < self.n_layers:
            bad = next(layer for layer in wanted if not 0 <= layer < self.n_layers)
            raise UsageError(f"layer {bad} does not exist: {self.name} has layers 0..{self.n_layers - 1}")
        return wanted

    def info(self) -> ModelInfo:
        cfg = self.model.cfg
        params = list(self.model.parameters())
        devices = sorted({str(p.device) for p in params}) or [str(cfg.device)]
        return ModelInfo(
            name=self.name,
            architecture=str(getattr(cfg, "architecture", None) or getattr(cfg, "original_architecture", "?")),
            n_layers=self.n_layers,
            d_model=int(cfg.d_model),
            n_heads=self.n_heads,
            d_head=int(cfg.d_head),
            n_ctx=self.n_ctx,
            d_vocab=int(cfg.d_vocab),
            n_params=sum(p.numel() for p in params),
            device=",".join(devices),
            dtype=str(cfg.dtype).removeprefix("torch."),
            memory_bytes=sum(p.numel() * p.element_size() for p in params)
            + sum(t.numel() * t.element_size() for d in self.dictionaries for t in d.sae.state_dict().values())
            + (self.dictionaries.cross_layer.nbytes() if self.dictionaries.cross_layer is not None else 0),
            processing=self.processing.describe(),
            prepend_bos=self.prepend_bos,
            dictionaries=tuple(_dictionary_info(d) for d in self.dictionaries),
        )

    # ---------------------------------------------------------------- tokens
    def tokenize(self, prompt: str) -> torch.Tensor:
        """The prompt as the model sees it, (1, seq), BOS included when the dictionaries expect it."""
        self._check_fits(prompt)
        tokens = self.model.to_tokens(check_text(prompt), prepend_bos=self.prepend_bos, truncate=False)
        if tokens.shape[-1] == 0 or not prompt:
            raise UsageError("the prompt is empty; type some text")
        if tokens.shape[-1] > self.n_ctx:
            raise IncompatibleError(
                f"the prompt is {tokens.shape[-1]} tokens but {self.name}'s context is {self.n_ctx}; shorten it"
            )
        return tokens

    def _check_fits(self, prompt: str) -> None:
        """Refuse, before tokenising, a prompt too long to fit the context whatever its tokens: no token spells
        more characters than the vocabulary's longest. Tokenising megabytes first is slow, and the Rust
        tokenizer aborts the process on some inputs of tens of megabytes."""
        if len(prompt) <= self.n_ctx:  # every token spells at least one character: this always fits
            return
        if self._longest_token is None:
            self._longest_token = max((len(t) for t in self.model.tokenizer.get_vocab()), default=1)
        most = self.n_ctx * self._longest_token
        if len(prompt) > most:
            raise IncompatibleError(
                f"the prompt is {len(prompt):,} characters but {self.name}'s context is {self.n_ctx} tokens, "
                f"at most {most:,} characters; shorten it"
            )

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Each id decoded on its own (cached: the vocabulary is finite)."""
        todo = sorted({int(i) for i in ids if int(i) not in self._token_strings})
        if todo:
            self._token_strings.update(zip(todo, token_texts(self.model.tokenizer, todo), strict=True))
        return [self._token_strings[int(i)] for i in ids]

    # ---------------------------------------------------------------- passes
    @contextmanager
    def hooks(self, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Forward hooks for the duration of one run, by hook name: what `TransformerBridge.hooks` does for
        names, without rebuilding its hook dictionary and alias map for every hook."""
        if self._hook_points is None:
            from transformer_lens.model_bridge.bridge import build_alias_to_canonical_map

            points = dict(self.model.hook_dict)
            aliases = build_alias_to_canonical_map(points)
            self._hook_points = {**{a: points[c] for a, c in aliases.items() if c in points}, **points}
        level = next(_HOOK_LEVELS)  # each context removes its own hooks only, nested or not
        added = []
        try:
            for name, fn in hooks:
                point = self._hook_points.get(name)
                if point is None:
                    raise IncompatibleError(f"{self.name} has no hook {name!r}")
                point.add_hook(fn, dir="fwd", level=level)
                added.append(point)
            yield
        finally:
            for point in added:
                point.remove_hooks(dir="fwd", level=level)

    @contextmanager
    def guard(self, tokens: int, *, grad: bool = False) -> Iterator[None]:
        """The lock for the shared hooks, gradients only when asked, and out-of-memory as one line (after
        which every cache told of it has let go of what it held)."""
        with self.lock, torch.set_grad_enabled(grad):
            try:
                yield
            except (RuntimeError, MemoryError) as err:  # torch.OutOfMemoryError is a RuntimeError
                if is_out_of_memory(err):
                    for forget in self.on_out_of_memory:
                        forget()
                    where = f"on {self.model.cfg.device} running a {tokens}-token prompt"
                    raise out_of_memory_error(where, err, _RUN_ADVICE) from err
                raise
            finally:
                self._drop_kept_patterns()

    def _drop_kept_patterns(self) -> None:
        """TransformerLens's fused-qkv attention keeps the last pass's pattern on the module (`_pattern`, never
        read again): (heads, seq, seq) a layer, and after a pass with gradients the whole autograd graph behind
        it, leaves included, until the next pass. Let go of it when the pass ends."""
        if self._pattern_keepers is None:
            self._pattern_keepers = [m for m in self.model.modules() if hasattr(m, "_pattern")]
        for module in self._pattern_keepers:
            module.__dict__["_pattern"] = None  # a plain attribute, not a parameter or buffer


def _dictionary_info(d: Dictionary) -> DictionaryInfo:
    return DictionaryInfo(
        key=d.key,
        layer=d.layer,
        hook=d.hook_in,
        hook_out=d.hook_out,
        d_in=d.d_in,
        d_sae=d.d_sae,
        architecture=d.architecture,
        l0=d.declared_l0,
        source=d.source,
    )


def out_of_memory_error(what: str, err: BaseException, advice: str) -> OutOfMemoryError:
    """One line naming what ran out of memory and the size asked for; CUDA's cache is emptied, so what
    failed leaves nothing held behind it."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return OutOfMemoryError(f"out of memory {what}{allocation(err)}; {advice}")


def check_finite_output(output: torch.Tensor, interventions: Sequence[Intervention]) -> torch.Tensor:
    """The logits (or an attention pattern), unless the interventions made them NaN or infinite: then a
    one-line error naming them. In float32 or float64 their sum is NaN or infinite exactly when one of them
    is (short of logits near 1e38 / vocabulary, which overflow it and are no answer either); summing is one
    pass without the (seq, vocab) mask that `isfinite(...).all()` allocates. Half precision's sum overflows
    at 65,504: there each value is checked."""
    if not interventions:
        return output
    wide = output.dtype in (torch.float32, torch.float64)
    if not (torch.isfinite(output.sum()) if wide else torch.isfinite(output).all()):
        raise NumericError(
            "the interventions made the model's output NaN or infinite ("
            + "; ".join(i.describe() for i in interventions)
            + "); use a smaller strength or value"
        )
    return output


class EnoughRead(Exception):
    """Raised from a hook once a pass has read what it came for: the layers after it need not run."""
