"""The inference runtime shared by the NER and embedding actors.

It turns documents' token sequences into windows, packs the windows into forward
passes by token budget (longest first), runs the model under ``inference_mode`` in
the requested precision, and hands each pass's outputs to a reducer that shrinks them
on the device to what the host needs; the host reads them a few passes behind the
device. Lengths are in tokens.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.config import EncoderScheduling, EncoderSettings
from pipeline.core.batching import pack_by_token_budget
from pipeline.core.windows import WindowPlan
from pipeline.models.families import family_of

# Passes queued on the device beyond the one whose outputs the host is reading: the GPU
# keeps working while the host decodes.
PASSES_AHEAD = 2

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is fp32 on CPU and bf16 on GPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


class Encoder:
    """One model on one device, fed windows by token budget, with its family's forward
    conventions applied (see :func:`adapt_to_family`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        prefix: list[int],
        suffix: list[int],
        pad_id: int,
        max_length: int,
        dtype: str,
        sched: EncoderScheduling,
    ) -> None:
        self.device = pick_device()
        if sched.threads and self.device.type == "cpu":
            torch.set_num_threads(sched.threads)  # Ray sets 1 thread for fractional CPUs
        self.dtype = resolve_dtype(dtype, self.device)
        # bf16 weights halve accelerator memory (GatorTron 8.9B: 18 GB instead of 36). fp16
        # stays autocast over fp32 weights: its narrow range is why autocast keeps some ops
        # in fp32, and fp16 weights would take that away.
        weights = torch.bfloat16 if self.dtype == torch.bfloat16 else None
        self.model = model.to(device=self.device, dtype=weights).eval()
        # bf16 weights run in bf16 throughout (norms and GELU accumulate in fp32 inside
        # their kernels); autocast over them would add a cast kernel per layer and run
        # layer norms in fp32: passes took 25% longer on an H100 (BERT-base).
        self.autocast = self.dtype == torch.float16
        self.prefix = np.asarray(prefix, dtype=np.int64)
        self.suffix = np.asarray(suffix, dtype=np.int64)
        self.pad_id = pad_id
        self.window = max_length - len(prefix) - len(suffix)
        if self.window < 1:
            raise ValueError(f"max length {max_length} tokens leaves no room beside special tokens")
        self.batch_tokens = sched.batch_tokens
        # Tensor cores want sequence lengths in multiples of 8; on CPU padding only costs.
        base = 8 if self.device.type == "cuda" else 1
        self.fixed_width, pad_multiple = adapt_to_family(self.model, max_length)
        if sched.compile_model:
            # Fuses the element-wise work between matrix products. Pass shapes vary, so
            # dynamic shapes: one compilation, not one per (windows, width).
            self.model = torch.compile(self.model, dynamic=True)
        # The budget counts the padding the model adds itself (Longformer: attention window).
        self.multiple_of = math.lcm(base, pad_multiple)
        # A CPU pass costs about the same per token at any batch size, so passes are cut
        # where padding would pass 2%; an accelerator needs big passes, and gets little
        # padding from sorting many windows (docs_per_batch) instead.
        cpu = self.device.type == "cpu"
        self.max_padding, self.min_pass_tokens = (0.02, 256) if cpu else (None, 0)
        self.padded_tokens = 0  # token positions computed, padding included
        self.real_tokens = 0

    @classmethod
    def load(cls, settings: EncoderSettings, task: str, sched: EncoderScheduling) -> Encoder:
        """Load the tokenizer's special tokens and the model for ``task`` ("ner" or
        "embed") from ``settings.model_dir``, once per actor."""
        from pipeline.models import loading as models
        from pipeline.stages.tokenize import special_tokens

        path = Path(settings.model_dir)
        tokenizer = models.load_tokenizer(path, settings.trust_remote_code)
        model = models.load_model(path, task, settings.trust_remote_code, settings.allow_pickle)
        prefix, suffix = special_tokens(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(model, prefix, suffix, pad, settings.max_length, settings.dtype, sched)

    def passes(
        self, doc_ids: list[np.ndarray], plan: WindowPlan
    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Yield ``(window indices, input_ids, attention_mask)`` per forward pass, on device."""
        extra = len(self.prefix) + len(self.suffix)
        lengths = plan.length + extra
        computed = np.full_like(lengths, self.fixed_width) if self.fixed_width else lengths
        batches = pack_by_token_budget(
            computed, self.batch_tokens, self.multiple_of, self.max_padding, self.min_pass_tokens
        )
        self.real_tokens += int(lengths.sum())
        pin = self.device.type == "cuda"
        for idx in batches:
            width = -(-int(computed[idx].max()) // self.multiple_of) * self.multiple_of
            # Filled in place in pinned memory on a GPU, so the copy to it is asynchronous.
            ids_t = torch.full((len(idx), width), self.pad_id, dtype=torch.int64, pin_memory=pin)
            mask_t = torch.zeros((len(idx), width), dtype=torch.int64, pin_memory=pin)
            ids, mask = ids_t.numpy(), mask_t.numpy()
            for row, w in enumerate(idx):
                s, n = int(plan.start[w]), int(plan.length[w])
                tokens = doc_ids[plan.doc[w]][s : s + n]
                ids[row, : n + extra] = np.concatenate([self.prefix, tokens, self.suffix])
                mask[row, : n + extra] = 1
            self.padded_tokens += len(idx) * width
            yield (
                idx,
                ids_t.to(self.device, non_blocking=True),
                mask_t.to(self.device, non_blocking=True),
            )

    def run(
        self,
        doc_ids: list[np.ndarray],
        plan: WindowPlan,
        reduce: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]],
        forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        on_docs: Callable[[list[int], list[tuple[np.ndarray, ...]]], None] | None = None,
    ) -> list[tuple[np.ndarray, ...]]:
        """Run every window; ``forward`` maps (ids, mask) to model output and ``reduce``
        shrinks it on the device to what the host needs (one row per window). Returns the
        reduced outputs as host arrays, in window order. ``on_docs(docs, outputs)`` is
        called with the documents whose windows are all done as soon as they are (the
        outputs list, by window, holds theirs), so every document once.

        On a GPU the host never waits for a pass it has just queued: outputs are copied
        to pinned host memory asynchronously, and the host reads a pass's outputs (and
        finishes its documents) while the GPU runs the next ones, whose inputs it has
        built meanwhile."""
        out: list[tuple[np.ndarray, ...] | None] = [None] * len(plan.doc)
        left = np.bincount(plan.doc, minlength=len(doc_ids))
        if on_docs is not None and (left == 0).any():  # no tokens, no windows
            on_docs(np.flatnonzero(left == 0).tolist(), out)  # type: ignore[arg-type]

        def finish(idx: np.ndarray, host: list[torch.Tensor], done: torch.cuda.Event | None):
            if done is not None:
                done.synchronize()
            arrays = [t.numpy() for t in host]
            for row, w in enumerate(idx.tolist()):
                out[w] = tuple(a[row] for a in arrays)
            if on_docs is None:
                return
            docs, counts = np.unique(plan.doc[idx], return_counts=True)
            left[docs] -= counts
            finished = docs[left[docs] == 0].tolist()
            if finished:
                on_docs(finished, out)  # type: ignore[arg-type]

        queued: deque[tuple[np.ndarray, list[torch.Tensor], torch.cuda.Event | None]] = deque()
        with torch.inference_mode():
            for idx, ids, mask in self.passes(doc_ids, plan):
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
                    hidden = forward(ids, mask)
                queued.append((idx, *self._to_host(reduce(hidden, mask))))
                del hidden  # its memory serves the next pass
                if len(queued) > PASSES_AHEAD:
                    finish(*queued.popleft())
            while queued:
                finish(*queued.popleft())
        return out  # type: ignore[return-value]

    def _to_host(
        self, tensors: tuple[torch.Tensor, ...]
    ) -> tuple[list[torch.Tensor], torch.cuda.Event | None]:
        """Start copying ``tensors`` to host memory; the event (GPU only) marks the end."""
        if self.device.type != "cuda":
            return list(tensors), None
        host = []
        for t in tensors:
            buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            host.append(buf.copy_(t, non_blocking=True))
        done = torch.cuda.Event()
        done.record()
        return host, done


def adapt_to_family(model: torch.nn.Module, max_length: int) -> tuple[int | None, int]:
    """Apply the model family's forward conventions. Returns the fixed width of every
    pass (tokens; None: as long as the longest window) and the multiple the model pads
    each pass to by itself (tokens)."""
    cfg = model.config
    family = family_of(getattr(cfg, "model_type", ""))
    fixed, multiple = None, 1
    if family.global_first_token:
        # Longformer's own classification heads put global attention on <s>; its token
        # classifier and base model do not, so every forward gets it here.
        model.register_forward_pre_hook(_global_attention_on_first_token, with_kwargs=True)
        window = cfg.attention_window
        multiple = max(window) if isinstance(window, list | tuple) else int(window)
    if family.block_sparse and getattr(cfg, "attention_type", "") == "block_sparse":
        # BigBird switches itself to full attention, for good, at the first pass shorter
        # than this, and its block-sparse result depends on the padded length: so either
        # full attention throughout, or every pass padded to the full window.
        shortest = (5 + 2 * cfg.num_random_blocks) * cfg.block_size
        if max_length <= shortest:
            model.base_model.set_attention_type("original_full")
        else:
            fixed = -(-max_length // cfg.block_size) * cfg.block_size
    return fixed, multiple


def _global_attention_on_first_token(
    module: torch.nn.Module, args: tuple, kwargs: dict
) -> tuple[tuple, dict]:
    if kwargs.get("global_attention_mask") is None:
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        mask = torch.zeros_like(ids)
        mask[:, 0] = 1
        kwargs["global_attention_mask"] = mask
    return args, kwargs
