"""GCG (Zou et al. 2023): greedy coordinate gradient search for an adversarial suffix that makes a
white-box model start its answer with an affirmative target."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..data._schema import PromptRecord
from ..errors import SpecError
from ..models import ChatModel
from ..models._whitebox import WhiteBox
from ._base import ATTACKS, AttackBase, Built
from ._whitebox import DEFAULT_TARGET, frozen, record_target, resolve_white_box, target_token_ids

_SLOT = "\x00SAFETHINK_SUFFIX\x00"


@ATTACKS.register()
@dataclass(kw_only=True)
class GCG(AttackBase):
    name = "gcg"
    family = "optimisation"
    paper = "https://arxiv.org/abs/2307.15043"
    description = "Adversarial suffix optimised with token gradients on a transformers model (white-box)."
    needs_target = True
    randomised = True
    n_steps: int = 50
    suffix_length: int = 20
    """Initial suffix length in tokens ('! ! ! ...')."""
    top_k: int = 256
    """Candidate replacement tokens per position, by most negative gradient."""
    search_width: int = 128
    """Candidate suffixes evaluated per step."""
    n_replace: int = 1
    """Positions changed per candidate."""
    eval_batch_size: int = 64
    target: str = DEFAULT_TARGET
    """Target when a record has none (records' own ``target`` wins)."""
    allow_non_ascii: bool = False
    early_stop: bool = True
    """Stop once greedy decoding would produce the whole target."""
    surrogate: Any = None
    """Optimise on this transformers model (spec or ChatModel) instead of the target, then transfer."""

    def __post_init__(self) -> None:
        for k in ("n_steps", "suffix_length", "top_k", "search_width", "n_replace", "eval_batch_size"):
            if getattr(self, k) < 1:
                raise SpecError(f"gcg: {k} must be >= 1")

    def build(self, records: Sequence[PromptRecord], rngs: Sequence[random.Random],
              target: ChatModel | None) -> list[Built]:
        hf = resolve_white_box(self.surrogate, target, what="gcg")
        out = []
        with frozen(hf.net):
            for r, rng in zip(records, rngs):
                request = r.user_text()
                suffix, meta = self._optimise(hf, request, record_target(r.target, self.target), rng)
                out.append(Built([{"role": "user", "content": f"{request} {suffix}"}], meta=meta))
        return out

    def _optimise(self, hf: WhiteBox, request: str, target_text: str, rng: random.Random) -> tuple[str, dict]:
        import torch

        tok, model, dev = hf.tokenizer, hf.net, hf.device
        gen = torch.Generator().manual_seed(rng.randrange(2**31))
        before, after = hf.render([{"role": "user", "content": f"{request} {_SLOT}"}]).split(_SLOT)
        before_ids = torch.tensor(tok(before, add_special_tokens=False).input_ids, device=dev)
        after_ids = torch.tensor(tok(after, add_special_tokens=False).input_ids, device=dev)
        tgt = torch.tensor(target_token_ids(hf, target_text), device=dev)
        suffix = torch.tensor(tok(" ".join(["!"] * self.suffix_length), add_special_tokens=False).input_ids, device=dev)
        allowed = _allowed_mask(tok, model.get_input_embeddings().weight.shape[0], self.allow_non_ascii).to(dev)
        embed = model.get_input_embeddings()

        def batch_loss(cands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            losses, hits = [], []
            n = cands.shape[0]
            for s in range(0, n, self.eval_batch_size):
                c = cands[s:s + self.eval_batch_size]
                b = c.shape[0]
                ids = torch.cat([before_ids.expand(b, -1), c, after_ids.expand(b, -1), tgt.expand(b, -1)], dim=1)
                with torch.no_grad():
                    logits = model(input_ids=ids, logits_to_keep=len(tgt) + 1).logits[:, :-1].float()
                ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt.expand(b, -1), reduction="none")
                losses.append(ce.mean(1))
                hits.append((logits.argmax(-1) == tgt).all(1))
            return torch.cat(losses), torch.cat(hits)

        best_loss, hit = (x[0] for x in batch_loss(suffix[None]))
        best = suffix.clone()
        history = [float(best_loss)]
        initial = float(best_loss)
        steps = 0
        for steps in range(1, self.n_steps + 1):
            if self.early_stop and bool(hit):
                steps -= 1
                break
            # Gradient of the target loss with respect to a one-hot encoding of the suffix.
            one_hot = torch.nn.functional.one_hot(suffix, embed.weight.shape[0]).to(embed.weight.dtype)
            one_hot.requires_grad_(True)
            full = torch.cat([embed(before_ids), one_hot @ embed.weight, embed(after_ids), embed(tgt)])[None]
            logits = model(inputs_embeds=full, logits_to_keep=len(tgt) + 1).logits[0, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits, tgt)
            (grad,) = torch.autograd.grad(loss, one_hot)
            grad = grad.masked_fill(~allowed, float("inf"))
            top = (-grad).topk(min(self.top_k, int(allowed.sum())), dim=1).indices  # L x k
            cands = self._sample(suffix, top, gen)
            cands = _retokenisable(tok, cands) if cands.shape[0] else cands
            losses, hits = batch_loss(cands)
            i = int(losses.argmin())
            suffix = cands[i]  # GCG moves to the step's best candidate even if it is worse
            if float(losses[i]) < float(best_loss):
                best_loss, best, hit = losses[i], suffix.clone(), hits[i]
            history.append(float(losses[i]))
        text = tok.decode(best.tolist())
        return text, {"suffix": text, "target": target_text, "initial_loss": initial,
                      "best_loss": float(best_loss), "loss_history": history, "steps": steps,
                      "target_reached": bool(hit)}

    def _sample(self, suffix: Any, top: Any, gen: Any) -> Any:
        import torch

        L, k = top.shape
        n = self.search_width
        cands = suffix.repeat(n, 1)
        pos = torch.stack([torch.randperm(L, generator=gen)[:min(self.n_replace, L)] for _ in range(n)]).to(suffix.device)
        pick = torch.randint(0, k, pos.shape, generator=gen).to(suffix.device)
        cands.scatter_(1, pos, top[pos, pick])
        return cands


def _retokenisable(tok: Any, cands: Any) -> Any:
    """Keep candidates whose text re-encodes to the same tokens, so the optimised suffix is the
    one the target actually sees when the prompt is sent as text."""
    import torch

    texts = tok.batch_decode(cands.tolist())
    keep = [i for i, t in enumerate(texts)
            if tok(t, add_special_tokens=False).input_ids == cands[i].tolist()]
    return cands[torch.tensor(keep, dtype=torch.long)] if keep else cands


@lru_cache(maxsize=4)
def _allowed_mask_cached(tok_id: int, vocab: int, allow_non_ascii: bool, tok_ref: Any) -> Any:
    import torch

    n = min(vocab, len(tok_ref))
    texts = tok_ref.batch_decode([[i] for i in range(n)])
    special = set(tok_ref.all_special_ids)
    ok = torch.zeros(vocab, dtype=torch.bool)
    for i, t in enumerate(texts):
        if i in special or not t.strip():
            continue
        if not allow_non_ascii and not (t.isascii() and t.isprintable()):
            continue
        ok[i] = True
    return ok


def _allowed_mask(tok: Any, vocab: int, allow_non_ascii: bool) -> Any:
    return _allowed_mask_cached(id(tok), vocab, allow_non_ascii, tok)
