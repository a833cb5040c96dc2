"""Layer Integrated Gradients and attention rollout on a Hugging Face BERT, against Captum and the model's floor.

Model: ``BertForSequenceClassification`` from a config (4 layers x 256 hidden, 4 heads, intermediate 1024,
vocabulary 1000, 2 labels), random init, eval mode, sdpa attention (transformers' default); 32 sequences of 128
token ids with real padding (lengths drawn from 64-128, pad id 0, ``attention_mask`` 0 on padding); 2 threads.

* LayerIG, 32 steps, at the word embeddings (``layer="auto"``: the model's ``get_input_embeddings()``), with the
  mask, target the predicted class: ours with each ``--budgets`` ``max_batch_size`` (with its default
  ``trim_padding=True``: samples sorted by length, each chunk cut at its longest real sequence; and once at the
  default budget with ``trim_padding=False``, every row at full length); Captum's
  ``LayerIntegratedGradients`` with its defaults (all 1024 rows in one batch) and with ``internal_batch_size``
  equal to each of our budgets. Floor: the model's forward plus ``torch.autograd.grad`` of the summed target logits
  with respect to the attributed embedding output only (no weight gradients), over the same 1024 interpolated rows
  in the same chunks (fed as ``inputs_embeds``, which BERT adds to the position and token-type embeddings exactly
  where the word embeddings' output goes).
* Rollout through ``output_attentions``: ``AttentionRollout()(model, ids, attention_mask=mask)`` against the
  model's own forward (sdpa) and an eager copy's forward with ``output_attentions=True``.

Every case runs once per repeat, the order rotating each repeat, all in this one process; medians are reported
(wall clock, and the process's CPU time as a steadier check on a shared machine). ``--profile`` then breaks one of
our LayerIG calls down: torch.profiler's operators, our own work around the model calls timed alone, and the floor
if each chunk's trailing padding were cut (a what-if). One LayerIG pass costs about 15 s on a quiet 2-core machine,
so the default run (9 LayerIG cases x 3 repeats) takes about 7 minutes; ``--budgets 128`` (6 cases) about 4-5.
The ratio to the floor is given against the issue's floor (all 1024 rows at full length) and against the floor of
the rows ours actually sends (cut at each chunk's longest real sequence).

    python benchmarks/hf_bert.py [--repeats 3] [--budgets 64 128] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import captum.attr as ca
import torch
from transformers import BertConfig, BertForSequenceClassification

from lightning_xai.attribution import AttentionRollout, IntegratedGradients
from lightning_xai.attribution.attention import rollout
from lightning_xai.attribution.integrated_gradients import quadrature

BATCH, LENGTH, STEPS, DEFAULT_BUDGET = 32, 128, 32, 128


def build() -> tuple[BertForSequenceClassification, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model, token ids ``[32, 128]``, the attention mask and the predicted class of each sequence."""
    torch.manual_seed(0)
    config = BertConfig(
        num_hidden_layers=4,
        hidden_size=256,
        num_attention_heads=4,
        intermediate_size=1024,
        vocab_size=1000,
        num_labels=2,
    )
    model = BertForSequenceClassification(config).eval()
    lengths = torch.randint(64, LENGTH + 1, (BATCH,))
    mask = (torch.arange(LENGTH)[None] < lengths[:, None]).long()
    ids = torch.randint(1, config.vocab_size, (BATCH, LENGTH)) * mask  # pad id 0
    with torch.no_grad():
        target = model(ids, attention_mask=mask).logits.argmax(1)
    return model, ids, mask, target


def path_rows(model: BertForSequenceClassification, ids: torch.Tensor) -> torch.Tensor:
    """The 1024 interpolated word-embedding rows IG evaluates, step-major as ours orders them."""
    embed = model.get_input_embeddings()
    with torch.no_grad():
        inputs, baseline = embed(ids), embed(torch.zeros_like(ids))
    alphas, _ = quadrature("gausslegendre", STEPS)
    alphas = alphas.float().view(-1, 1, 1, 1)
    return (baseline + alphas * (inputs - baseline)).reshape(STEPS * BATCH, LENGTH, -1)


def floor_fn(
    model: BertForSequenceClassification, rows: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, budget: int
) -> Callable[[], None]:
    """Forward + ``autograd.grad`` w.r.t. the embedding output only, over ``rows`` in chunks of ``budget``."""
    sample = torch.arange(rows.shape[0]) % BATCH
    chunks = [
        (rows[start : start + budget], mask[sample[start : start + budget]], target[sample[start : start + budget]])
        for start in range(0, rows.shape[0], budget)
    ]

    def run() -> None:
        for embeddings, chunk_mask, chunk_target in chunks:
            embeddings = embeddings.detach().requires_grad_(True)
            logits = model(inputs_embeds=embeddings, attention_mask=chunk_mask).logits
            torch.autograd.grad(logits.gather(1, chunk_target[:, None]).sum(), embeddings)

    return run


class Timing(NamedTuple):
    wall: float
    cpu: float


def interleaved(cases: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, Timing], dict[str, object]]:
    """Median wall and CPU seconds of each case, and each case's last result.

    Every repeat runs every case once, the order rotating each repeat.
    """
    names = list(cases)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, object] = {}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            results[name] = cases[name]()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    timings = {name: Timing(statistics.median(wall[name]), statistics.median(cpu[name])) for name in names}
    return timings, results


def trimmed_floor_fn(
    model: BertForSequenceClassification, rows: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, budget: int
) -> Callable[[], None]:
    """The floor of the rows ours sends with ``trim_padding``: grouped by sample (shortest first), each chunk cut at
    its longest real token.

    With right padding, BERT's classification logit does not depend on padded positions (their keys are masked),
    so cutting the trailing padding of a chunk changes nothing but the cost.
    """
    lengths = mask.sum(1)
    per_chunk = max(1, budget // STEPS)  # samples per chunk, all their steps
    order = lengths.argsort()
    step_rows = rows.view(STEPS, BATCH, LENGTH, -1)
    chunks = []
    for start in range(0, BATCH, per_chunk):
        samples = order[start : start + per_chunk]
        cut = int(lengths[samples].max())
        chunk = step_rows[:, samples, :cut].transpose(0, 1).reshape(-1, cut, rows.shape[-1])
        chunks.append(
            (chunk, mask[samples, :cut].repeat_interleave(STEPS, 0), target[samples].repeat_interleave(STEPS))
        )

    def run() -> None:
        for embeddings, chunk_mask, chunk_target in chunks:
            embeddings = embeddings.detach().requires_grad_(True)
            logits = model(inputs_embeds=embeddings, attention_mask=chunk_mask).logits
            torch.autograd.grad(logits.gather(1, chunk_target[:, None]).sum(), embeddings)

    return run


def profile_ours(model, ids, mask, target, rows: torch.Tensor, budget: int, repeats: int) -> None:
    """Where a LayerIG call of ours goes: the model's operators, our own work, what trimming padding would save."""
    from torch.profiler import ProfilerActivity, profile

    from lightning_xai.attribution._base import layer_output
    from lightning_xai.attribution._model import Extras

    explainer = IntegratedGradients(steps=STEPS, layer="auto", max_batch_size=budget)
    print(f"\n--profile: ours at max_batch_size={budget}")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        explainer(model, ids, target, attention_mask=mask)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))
    groups = {
        "matmul (linear, attention products)": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm"),
        "scaled_dot_product_attention fwd+bwd": ("flash_attention", "scaled_dot_product", "_efficient_attention"),
        "gelu fwd+bwd": ("gelu",),
        "layer_norm fwd+bwd": ("layer_norm",),
        "index_add_ (as scatter_add_) / index / embedding (ours)": (
            "aten::index_add_",
            "aten::scatter_add_",
            "aten::index",
            "embedding",
        ),
    }
    print("share of self CPU time:")
    for label, keys in groups.items():
        share = sum(e.self_cpu_time_total for e in events if any(k in e.key for k in keys)) / total
        print(f"  {label:56s} {share:6.1%}")

    # our own work around the model calls, timed alone
    module = model.get_input_embeddings()
    extras = Extras({"attention_mask": mask}, BATCH)

    def endpoints() -> None:  # the layer's output at the input and at the baseline: two no-grad forwards
        layer_output(model, module, (ids,), extras)
        layer_output(model, module, (torch.zeros_like(ids),), extras)

    inputs = layer_output(model, module, (ids,), extras)
    baseline = layer_output(model, module, (torch.zeros_like(ids),), extras)
    delta = inputs - baseline
    alphas, weights = (t.float() for t in quadrature("gausslegendre", STEPS))

    def bookkeeping() -> None:  # the path rows and the weighted index_add_, without the model
        total = torch.zeros_like(inputs)
        for start in range(0, STEPS * BATCH, budget):
            chunk = torch.arange(start, min(STEPS * BATCH, start + budget))
            step, sample = chunk // BATCH, chunk % BATCH
            path = baseline[sample] + alphas[step].view(-1, 1, 1) * delta[sample]
            total.index_add_(0, sample, path * weights[step].view(-1, 1, 1))

    cases = {
        "ours": lambda: explainer(model, ids, target, attention_mask=mask),
        "floor": floor_fn(model, rows, mask, target, budget),
        "floor, padding trimmed": trimmed_floor_fn(model, rows, mask, target, budget),
        "endpoints (2 forwards)": endpoints,
        "path + index_add_": bookkeeping,
    }
    timings, _ = interleaved(cases, repeats)
    floor = timings["floor"]
    for name, timing in timings.items():
        print(
            f"  {name:24s} wall {timing.wall:7.2f} s ({timing.wall / floor.wall:5.2f} x floor)   "
            f"cpu {timing.cpu:7.2f} s ({timing.cpu / floor.cpu:5.2f} x floor)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="+", default=[64, DEFAULT_BUDGET], help="our max_batch_size")
    parser.add_argument("--profile", action="store_true", help="then profile ours at the best budget")
    args = parser.parse_args()
    budgets = sorted(set(args.budgets) | {DEFAULT_BUDGET})
    torch.set_num_threads(2)
    model, ids, mask, target = build()
    lengths = mask.sum(1)
    print(
        f"BERT 4x256, {BATCH} sequences of {LENGTH} (real lengths {int(lengths.min())}-{int(lengths.max())}, mean "
        f"{lengths.float().mean():.0f}), attention {model.config._attn_implementation}, {torch.get_num_threads()} "
        "threads"
    )

    def forward_fn(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    captum_lig = ca.LayerIntegratedGradients(forward_fn, model.bert.embeddings.word_embeddings)

    def ours(budget: int, steps: int = STEPS, trim: bool = True) -> Callable[[], torch.Tensor]:
        explainer = IntegratedGradients(steps=steps, layer="auto", max_batch_size=budget, trim_padding=trim)
        return lambda: explainer(model, ids, target, attention_mask=mask)

    def captum(budget: int | None, steps: int = STEPS) -> Callable[[], torch.Tensor]:
        return lambda: captum_lig.attribute(
            ids, target=target, additional_forward_args=(mask,), n_steps=steps, internal_batch_size=budget
        )

    rows = path_rows(model, ids)
    for budget in budgets:  # warm-up of every code path and chunk shape
        ours(budget, steps=2)()
        ours(budget, steps=2, trim=False)()
        captum(budget, steps=2)()
        floor_fn(model, rows[:budget], mask, target, budget)()
    cases: dict[str, Callable[[], object]] = {
        "captum default": captum(None),
        "ours untrimmed": ours(DEFAULT_BUDGET, trim=False),
    }
    for budget in budgets:
        cases[f"ours {budget}"] = ours(budget)
        cases[f"captum {budget}"] = captum(budget)
        cases[f"floor {budget}"] = floor_fn(model, rows, mask, target, budget)
    cases["floor trimmed"] = trimmed_floor_fn(model, rows, mask, target, DEFAULT_BUDGET)
    start = time.perf_counter()
    times, results = interleaved(cases, args.repeats)
    print(f"\nLayerIG, {len(cases)} cases x {args.repeats} interleaved repeats in {time.perf_counter() - start:.0f} s:")
    for name, timing in times.items():
        print(f"  {name:16s} wall {timing.wall:7.2f} s   cpu {timing.cpu:7.2f} s")
    reference = results["captum default"]
    scale = reference.abs().max().item()
    for budget in [*budgets, "untrimmed"]:
        attr = results[f"ours {budget}"]
        diff = (attr - reference).abs().max().item()
        close = torch.allclose(attr, reference, rtol=1e-4, atol=1e-5 * scale)
        print(
            f"  agreement, ours {budget} vs Captum default: max |diff| {diff:.1e} (max |attr| {scale:.1e}, relative "
            f"{diff / scale:.0e}); allclose(rtol=1e-4, atol=1e-5 * max |attr|): {close}; at padding max |attr| "
            f"{attr[mask == 0].abs().max().item():.0e}"
        )

    # rollout through output_attentions
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    explainer = AttentionRollout()
    with torch.no_grad():
        attentions = eager(ids, attention_mask=mask, output_attentions=True).attentions
    keep = mask[:, None, None, :].float()
    expected = rollout([a * keep for a in attentions])[:, 0]

    def sdpa_forward() -> None:
        with torch.no_grad():
            model(ids, attention_mask=mask)

    def eager_forward() -> None:
        with torch.no_grad():
            eager(ids, attention_mask=mask, output_attentions=True)

    rollout_cases = {
        "forward (sdpa)": sdpa_forward,
        "eager forward": eager_forward,
        "rollout": lambda: explainer(model, ids, attention_mask=mask),
    }
    for fn in rollout_cases.values():
        fn()
    rollout_times, rollout_results = interleaved(rollout_cases, 5 * args.repeats)
    print(f"\nRollout, {5 * args.repeats} interleaved repeats:")
    for name, timing in rollout_times.items():
        print(f"  {name:16s} wall {timing.wall * 1e3:7.1f} ms  cpu {timing.cpu * 1e3:7.1f} ms")
    rollout_diff = (rollout_results["rollout"] - expected).abs().max().item()
    print(f"  agreement with the rollout of the eager copy's output_attentions: max |diff| {rollout_diff:.0e}")

    best = min(budgets, key=lambda b: times[f"ours {b}"].wall)
    default = times["captum default"]
    header = ("measure", "ours (s)", "Captum default (s)", "Captum batched (s)", "ours/floor", "vs Captum default")
    print(f"\n{header[0]:46s} " + " ".join(f"{h:>18s}" for h in header[1:]))
    for budget in dict.fromkeys([best, DEFAULT_BUDGET]):
        label = {(True, True): "best, default", (True, False): "best", (False, True): "default"}[
            (budget == best, budget == DEFAULT_BUDGET)
        ]
        ours_t, floor_t = times[f"ours {budget}"], times[f"floor {budget}"]
        name = f"LayerIG (32 steps), max_batch_size={budget} ({label})"
        print(
            f"{name:46s} {ours_t.wall:18.2f} {default.wall:18.2f} {times[f'captum {budget}'].wall:18.2f} "
            f"{ours_t.wall / floor_t.wall:18.2f} {default.wall / ours_t.wall:17.2f}x"
        )
        print(
            f"{'  the same in CPU time':46s} {ours_t.cpu:18.2f} {default.cpu:18.2f} "
            f"{times[f'captum {budget}'].cpu:18.2f} "
            f"{ours_t.cpu / floor_t.cpu:18.2f} {default.cpu / ours_t.cpu:17.2f}x"
        )
    fwd, eager_fwd, t_rollout = (rollout_times[n] for n in rollout_cases)
    for name, timing in (
        ("AttentionRollout (ratio to the sdpa forward)", t_rollout),
        ("  eager forward, output_attentions", eager_fwd),
    ):
        print(
            f"{name:46s} {timing.wall:18.3f} {'-':>18s} {'-':>18s} {timing.wall / fwd.wall:18.2f} {'-':>18s}   "
            f"(CPU time: {timing.cpu / fwd.cpu:.2f})"
        )
    untrimmed = times["ours untrimmed"]
    print(
        f"{'  untrimmed (trim_padding=False), default':46s} {untrimmed.wall:18.2f} {default.wall:18.2f} {'-':>18s} "
        f"{untrimmed.wall / times[f'floor {DEFAULT_BUDGET}'].wall:18.2f} {default.wall / untrimmed.wall:17.2f}x"
    )
    trimmed, ours_default = times["floor trimmed"], times[f"ours {DEFAULT_BUDGET}"]
    print(
        f"{'  floor of the rows ours sends (trimmed), default':46s} {trimmed.wall:18.2f}; ours / this floor "
        f"{ours_default.wall / trimmed.wall:.2f} (CPU {ours_default.cpu / trimmed.cpu:.2f})"
    )
    print("targets: LayerIG <= 1.10 x floor and >= 1.5x faster than Captum's default; rollout <= 2 x forward")
    if args.profile:
        profile_ours(model, ids, mask, target, rows, best, args.repeats)


if __name__ == "__main__":
    main()
