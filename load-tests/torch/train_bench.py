#!/usr/bin/env python3
"""Training throughput of the Provenant transformer in PyTorch on the CPU (or, with
`--device cuda`, the first CUDA GPU): the PyTorch side of the Burn-vs-PyTorch benchmark
(`load-tests/src/train_bench.rs`). Prints one line of JSON.

The model mirrors `shared/model/src/transformer.rs`: token and learned position embeddings,
`layers` pre-LayerNorm blocks of causal multi-head self-attention (separate query, key, value
and output projections, each with a bias) and a ReLU (or GELU-tanh) MLP, a final LayerNorm and a
linear LM head with a bias. Initialisation follows it too: N(0, 0.02) for embeddings and weight
matrices, N(0, 0.02 / sqrt(2 * layers)) for the residual projections (attention output and MLP
down), zero biases, LayerNorm gamma 1 and beta 0 with epsilon 1e-5. The loss is the mean
cross-entropy over targets that are not PAD (258). AdamW uses Burn's defaults where PyTorch's
differ (epsilon 1e-5) and the benchmark's learning rate and weight decay (3e-3 and 0.01, the
decay on weight matrices, embeddings and, in LoRA mode, the adapter factors; none on biases and
LayerNorm), at a constant learning rate.

LoRA mode (`shared/model/src/lora.rs`) freezes every base parameter and adds to each targeted
linear layer of every block `(alpha / rank) * (x @ A) @ B`, with A [d_in, rank] drawn from
N(0, 1/rank^2) and B [rank, d_out] zeros; AdamW updates the factors only. Burn instead folds the
factors into the weight on every forward pass (`W + scale * A @ B`, then `x @ W`);
`--lora-form merged` computes it that way, for comparison.

Data: random byte tokens (0..255) from the seed, [batch, seq + 1] per step, inputs [:, :-1] and
targets [:, 1:]; `--fixed-batch` trains on one batch throughout (the loss must fall).

Only the standard library and torch; nothing but the JSON line goes to stdout.
"""

import argparse
import json
import math
import resource
import statistics
import sys
import time
import warnings

# PyPI's torch imports without NumPy (the benchmark needs none) but warns that it lacks it.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

VOCAB_SIZE = 259
PAD = 258
INIT_STD = 0.02
LAYER_NORM_EPSILON = 1e-5
ADAM_EPSILON = 1e-5  # Burn's AdamWConfig default (PyTorch's is 1e-8).

# LoRA target name -> (sub-module of a block, attribute), as in shared/model/src/config.rs.
LORA_TARGETS = {
    "attention_query": ("attention", "query"),
    "attention_key": ("attention", "key"),
    "attention_value": ("attention", "value"),
    "attention_output": ("attention", "output"),
    "mlp_up": ("mlp", "up"),
    "mlp_down": ("mlp", "down"),
}


def linear(d_input, d_output, std):
    layer = nn.Linear(d_input, d_output, bias=True)
    with torch.no_grad():
        layer.weight.normal_(0.0, std)
        layer.bias.zero_()
    return layer


def layer_norm(width):
    # nn.LayerNorm starts at gamma 1, beta 0, as Burn's does.
    return nn.LayerNorm(width, eps=LAYER_NORM_EPSILON, elementwise_affine=True, bias=True)


class Attention(nn.Module):
    def __init__(self, width, heads, residual_std):
        super().__init__()
        self.heads = heads
        self.query = linear(width, width, INIT_STD)
        self.key = linear(width, width, INIT_STD)
        self.value = linear(width, width, INIT_STD)
        self.output = linear(width, width, residual_std)

    def forward(self, hidden):
        batch, time_, width = hidden.shape
        head_width = width // self.heads

        def split(projection):
            return projection(hidden).view(batch, time_, self.heads, head_width).transpose(1, 2)

        attended = F.scaled_dot_product_attention(split(self.query), split(self.key), split(self.value), is_causal=True)
        return self.output(attended.transpose(1, 2).reshape(batch, time_, width))


class Mlp(nn.Module):
    def __init__(self, width, mlp_width, residual_std, activation):
        super().__init__()
        self.up = linear(width, mlp_width, INIT_STD)
        self.down = linear(mlp_width, width, residual_std)
        self.activation = activation

    def forward(self, hidden):
        hidden = self.up(hidden)
        hidden = F.relu(hidden) if self.activation == "relu" else F.gelu(hidden, approximate="tanh")
        return self.down(hidden)


class Block(nn.Module):
    def __init__(self, width, heads, mlp_width, residual_std, activation):
        super().__init__()
        self.attention_norm = layer_norm(width)
        self.attention = Attention(width, heads, residual_std)
        self.mlp_norm = layer_norm(width)
        self.mlp = Mlp(width, mlp_width, residual_std, activation)

    def forward(self, hidden):
        hidden = hidden + self.attention(self.attention_norm(hidden))
        return hidden + self.mlp(self.mlp_norm(hidden))


class Transformer(nn.Module):
    def __init__(self, layers, heads, width, context, mlp_ratio, activation):
        super().__init__()
        # Residual projections are scaled down so the residual stream's variance does not grow
        # with depth (GPT-2, section 2.3), as in transformer.rs.
        residual_std = INIT_STD / math.sqrt(2 * layers)
        self.context = context
        self.token_embedding = nn.Embedding(VOCAB_SIZE, width)
        self.position_embedding = nn.Embedding(context, width)
        with torch.no_grad():
            self.token_embedding.weight.normal_(0.0, INIT_STD)
            self.position_embedding.weight.normal_(0.0, INIT_STD)
        self.blocks = nn.ModuleList(Block(width, heads, width * mlp_ratio, residual_std, activation) for _ in range(layers))
        self.final_norm = layer_norm(width)
        self.lm_head = linear(width, VOCAB_SIZE, INIT_STD)

    def forward(self, tokens):
        time_ = tokens.shape[1]
        assert time_ <= self.context, f"sequence of {time_} tokens exceeds the context length {self.context}"
        positions = torch.arange(time_, device=tokens.device)
        hidden = self.token_embedding(tokens) + self.position_embedding(positions).unsqueeze(0)
        for block in self.blocks:
            hidden = block(hidden)
        return self.lm_head(self.final_norm(hidden))

    def loss(self, inputs, targets):
        logits = self.forward(inputs)
        return F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), targets.reshape(-1), ignore_index=PAD)


class LoraLinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update `scale * (x @ A) @ B`."""

    def __init__(self, base, rank, alpha, form):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.form = form
        d_input, d_output = base.in_features, base.out_features
        self.lora_a = nn.Parameter(torch.empty(d_input, rank).normal_(0.0, 1.0 / rank))
        self.lora_b = nn.Parameter(torch.zeros(rank, d_output))

    def forward(self, hidden):
        if self.form == "merged":
            # Burn's reparameterisation: the adapted weight, then one matmul.
            weight = self.base.weight + self.scale * (self.lora_a @ self.lora_b).t()
            return F.linear(hidden, weight, self.base.bias)
        return self.base(hidden) + self.scale * ((hidden @ self.lora_a) @ self.lora_b)


def apply_lora(model, rank, alpha, targets, form):
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for block in model.blocks:
        for target in targets:
            module_name, attribute = LORA_TARGETS[target]
            parent = getattr(block, module_name)
            base = getattr(parent, attribute)
            limit = min(base.in_features, base.out_features)
            if rank > limit:
                raise SystemExit(f"LoRA rank {rank} exceeds {limit}, the smaller side of {target}")
            setattr(parent, attribute, LoraLinear(base, rank, alpha, form))


def parameter_groups(model, weight_decay):
    """Decay on weight matrices, embeddings and LoRA factors; none on biases and LayerNorm."""
    norms = {id(parameter) for module in model.modules() if isinstance(module, nn.LayerNorm) for parameter in module.parameters()}
    decayed, undecayed = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) in norms or name.endswith(".bias"):
            undecayed.append(parameter)
        else:
            decayed.append(parameter)
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if undecayed:
        groups.append({"params": undecayed, "weight_decay": 0.0})
    return groups


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["full", "lora"], default="full")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--context", type=int, default=128, help="context length (rows of the position embedding)")
    parser.add_argument("--mlp-ratio", type=int, default=4)
    parser.add_argument("--activation", choices=["relu", "gelu_tanh"], default="relu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128, help="sequence length of a training window")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before the timed ones")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the model trains; each step ends with loss.item(), which waits for the GPU")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--targets", default=",".join(LORA_TARGETS), help="comma-separated LoRA targets")
    parser.add_argument("--lora-form", choices=["factored", "merged"], default="factored",
                        help="factored: base(x) + s*(x@A)@B; merged: x@(W + s*A@B) as Burn computes it")
    parser.add_argument("--fixed-batch", action="store_true", help="train on one batch throughout (a sanity check: the loss falls)")
    parser.add_argument("--verbose", action="store_true", help="print every step's loss and time to stderr")
    args = parser.parse_args()
    positive = ["layers", "heads", "width", "context", "mlp_ratio", "batch", "seq", "steps", "threads", "rank"]
    for name in positive:
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be greater than zero")
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must not be negative")
    if args.width % args.heads:
        parser.error(f"width {args.width} is not a multiple of heads {args.heads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA GPU")
    if args.seq > args.context:
        parser.error(f"sequence length {args.seq} exceeds the context length {args.context}")
    if not (args.alpha > 0 and math.isfinite(args.alpha)):
        parser.error("--alpha must be positive and finite")
    args.targets = [target.strip() for target in args.targets.split(",") if target.strip()]
    unknown = [target for target in args.targets if target not in LORA_TARGETS]
    if unknown or not args.targets or len(set(args.targets)) != len(args.targets):
        parser.error(f"--targets takes distinct names among {', '.join(LORA_TARGETS)}")
    return args


def main():
    args = arguments()
    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = Transformer(args.layers, args.heads, args.width, args.context, args.mlp_ratio, args.activation)
    if args.method == "lora":
        apply_lora(model, args.rank, args.alpha, args.targets, args.lora_form)
    device = torch.device(args.device)
    model.to(device)
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999), eps=ADAM_EPSILON)

    total_steps = args.warmup_steps + args.steps
    data = torch.Generator().manual_seed(args.seed)
    batch_count = 1 if args.fixed_batch else total_steps
    batches = [torch.randint(0, 256, (args.batch, args.seq + 1), generator=data).to(device) for _ in range(batch_count)]

    def step(tokens):
        loss = model.loss(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    step_seconds, losses = [], []
    for index in range(total_steps):
        tokens = batches[0 if args.fixed_batch else index]
        started = time.perf_counter()
        loss = step(tokens)
        seconds = time.perf_counter() - started
        losses.append(loss)
        if index >= args.warmup_steps:
            step_seconds.append(seconds)
        if args.verbose:
            print(f"step {index + 1}/{total_steps} loss {loss:.4f} {seconds * 1e3:.1f} ms", file=sys.stderr)

    tokens_per_step = args.batch * args.seq
    report = {
        "framework": "pytorch",
        "version": torch.__version__,
        "method": args.method,
        "threads": args.threads,
        "device": torch.cuda.get_device_name(device) if args.device == "cuda" else "cpu",
        "batch": args.batch,
        "sequence_length": args.seq,
        "layers": args.layers,
        "heads": args.heads,
        "width": args.width,
        "context_length": args.context,
        "mlp_ratio": args.mlp_ratio,
        "activation": args.activation,
        "warmup_steps": args.warmup_steps,
        "fixed_batch": args.fixed_batch,
        "parameters_total": sum(parameter.numel() for parameter in model.parameters()),
        "parameters_trainable": sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad),
        "step_seconds": step_seconds,
        "tokens_per_second": tokens_per_step * len(step_seconds) / sum(step_seconds),
        "median_step_tokens_per_second": tokens_per_step / statistics.median(step_seconds),
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if args.device == "cuda":
        report["peak_device_bytes"] = torch.cuda.max_memory_allocated(device)
    if args.method == "lora":
        report["lora"] = {"rank": args.rank, "alpha": args.alpha, "targets": args.targets, "form": args.lora_form}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
