"""Masked-language-modelling loss and accuracy: tensors in, scalar out."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the real slots.

    ``logits`` (..., V) (any dtype; computed in fp32), ``labels`` (...) long with ``-100`` in
    padded / unselected slots. Returns an fp32 scalar: sum of per-slot cross-entropy over slots
    with ``label != -100`` divided by their number; ``0.0`` (with zero, finite gradients) when
    there is none. No host synchronisation.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree: "
                         "expected logits (..., V) and labels (...)")
    flat = logits.reshape(-1, logits.shape[-1]).float()  # (n, V)
    lab = labels.reshape(-1)  # (n,)
    total = F.cross_entropy(flat, lab, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (lab != IGNORE_INDEX).sum().clamp_min(1)
    return total / count


@torch.no_grad()
def mlm_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy (fp32 scalar tensor) over slots with ``label != -100``; 0.0 if none."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    valid = labels != IGNORE_INDEX
    correct = (logits.argmax(dim=-1) == labels) & valid
    return correct.sum().float() / valid.sum().clamp_min(1).float()


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


class _ChunkedLinearCE(torch.autograd.Function):
    """Mean cross-entropy of ``x @ weight[:V].T + bias[:V]`` against ``labels``, one row chunk at
    a time; the gradients are computed chunk by chunk during the forward pass (so no (n, V) tensor
    is ever kept) and scaled by the incoming gradient in the backward. The weight and bias
    gradients have the full (padded) shapes, zero beyond row ``V``: no slice of the parameter
    enters the graph (whose backward would zero-fill and copy a second (V, D) buffer)."""

    @staticmethod
    def forward(ctx, x, weight, bias, labels, chunk, cdt, with_grad, V):  # type: ignore[override]
        n = x.shape[0]
        valid = labels != IGNORE_INDEX
        acc = torch.promote_types(cdt, torch.float32)  # fp32 (fp64 for fp64 inputs)
        count = valid.sum().clamp_min(1).to(acc)
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        wc = weight[:V].to(cdt)
        bc = bias[:V].to(cdt) if bias is not None else None
        total = torch.zeros((), dtype=acc, device=x.device)
        # fp16: d(mean loss)/d logits ≈ softmax / count falls below fp16's smallest subnormal (6e-8)
        # for most of the vocabulary once V * count > 1.7e7, and the GradScaler's factor only comes
        # in the backward: multiply in fp16 by (softmax - one-hot) alone and divide by count after
        late = cdt == torch.float16
        dx = torch.empty_like(x) if with_grad else None
        dw = db = None
        if with_grad:  # (V_pad, D) / (V_pad,) in ``acc``; rows >= V stay 0
            dw = torch.empty(weight.shape, dtype=acc, device=x.device)
            dw[V:].zero_()
            db = torch.zeros(weight.shape[0], dtype=acc, device=x.device) if bias is not None else None
        for i, a in enumerate(range(0, n, chunk)):
            xc = x[a:a + chunk].to(cdt)
            logits = (xc @ wc.T if bc is None else torch.addmm(bc, xc, wc.T)).to(acc)  # (c, V) fp32, one chunk
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, safe[a:a + chunk, None]).squeeze(1)
            v = valid[a:a + chunk]
            total = total + torch.where(v, lse - picked, torch.zeros_like(lse)).sum()
            if with_grad:
                g = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory (no more use for them)
                g.scatter_add_(1, safe[a:a + chunk, None], -torch.ones_like(lse)[:, None])
                # d(mean loss)/d logits (times count when late); 0 on ignored rows
                g.mul_((v.to(g.dtype) if late else v.to(g.dtype) / count)[:, None])
                gc = g.to(cdt)
                dxc = gc @ wc
                dx[a:a + chunk] = (dxc.to(acc) / count if late else dxc).to(x.dtype)
                if i == 0 and cdt == acc:  # the first chunk's product straight into the gradient
                    torch.mm(gc.T, xc, out=dw[:V])
                elif i == 0:
                    dw[:V].copy_(gc.T @ xc)
                else:
                    dw[:V].add_(gc.T @ xc)
                if db is not None:
                    db[:V].add_(g.sum(0))
        if with_grad:
            if n == 0:  # no rows at all: zero gradients
                dw[:V].zero_()
            if late:
                dw[:V].div_(count)
                if db is not None:
                    db.div_(count)
            ctx.save_for_backward(dx, db.to(bias.dtype) if db is not None else None)
            # not a saved tensor: handed to autograd in the backward with no other reference, so
            # the parameter's .grad takes this buffer itself instead of a copy
            ctx.dw = dw.to(weight.dtype)
        return (total / count).float()

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        dx, db = ctx.saved_tensors
        need = ctx.needs_input_grad
        dw = None
        wanted = _engine_wants(ctx, 1) if need[1] else False  # False e.g. in GradNorm's autograd.grad
        if wanted is None and ctx.dw is not None:  # unknown: a scaled copy, the buffer stays
            dw = ctx.dw * grad_out.to(ctx.dw.dtype)
        elif wanted:  # the (V_pad, D) weight gradient, scaled in place and given away: once only
            dw, ctx.dw = ctx.dw, None
            if dw is None:
                raise RuntimeError("linear_cross_entropy: a second backward asked for the weight's gradient; "
                                   "it is handed over by the first one (compute the loss again)")
            dw.mul_(grad_out.to(dw.dtype))
        return (dx * grad_out.to(dx.dtype) if need[0] else None, dw,
                db * grad_out.to(db.dtype) if db is not None and need[2] else None, None, None, None, None, None)


def _engine_wants(ctx, i: int) -> bool | None:
    """Whether the running backward uses input ``i``'s gradient of a custom Function: False in an
    ``autograd.grad`` that does not reach it, True when it does, None when torch cannot say."""
    try:
        fn = ctx.next_functions[i][0]
        return fn is not None and bool(torch._C._will_engine_execute_node(fn))
    except RuntimeError:  # a leaf captured by autograd.grad(inputs=...): it is wanted
        return True
    except AttributeError:  # no such (private) engine query in this torch
        return None


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         labels: torch.Tensor, chunk: int = 1024, num_classes: int | None = None) -> torch.Tensor:
    """``mlm_loss(x @ weight[:num_classes].T + bias[:num_classes], labels)`` without materialising
    the logits.

    ``x`` (n, D), ``weight`` (V_pad, D), ``bias`` (V_pad,) or None, ``labels`` (n,) long in
    ``[0, num_classes)`` or ``-100`` on ignored rows; ``num_classes`` (default: all rows) — the
    rows past it (vocabulary padding) are never scored and get zero gradient. Works on ``chunk``
    rows at a time: the logits of one chunk (in the autocast dtype when autocast is on, else
    ``x``'s), their log-sum-exp in fp32, and — when a gradient is needed — the gradients w.r.t.
    ``x``, ``weight`` and ``bias`` of that chunk, accumulated in fp32. Peak extra memory: one
    (chunk, V) fp32 block plus the gradients of the inputs, instead of (n, V) logits, their fp32
    copy and the softmax. Returns an fp32 scalar; 0.0 (zero, finite gradients) when no row is
    labelled. No host synchronisation. One backward through the result (autograd refuses a
    second one that asks for ``weight``'s gradient again, with a message).
    """
    if x.dim() != 2 or labels.shape != x.shape[:1] or weight.shape[1] != x.shape[1]:
        raise ValueError(f"x {tuple(x.shape)}, weight {tuple(weight.shape)} and labels {tuple(labels.shape)} "
                         "disagree: expected x (n, D), weight (V, D), labels (n,)")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    V = weight.shape[0] if num_classes is None else int(num_classes)
    if not 0 < V <= weight.shape[0]:
        raise ValueError(f"num_classes must be in [1, {weight.shape[0]}], got {V}")
    with_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or
                                             (bias is not None and bias.requires_grad))
    cdt = _compute_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return _ChunkedLinearCE.apply(x, weight, bias, labels, int(chunk), cdt, with_grad, V)
