"""PyTorch versions of makemore.py's models, written from its behaviour, with its parameter names: the
other side of `python -m mmjax.interop compare`, the parity tests and the benchmarks. Only
mmjax.interop, the tests and the benchmark scripts import this module (and so torch)."""

import math
import sys
import warnings

import torch
import torch.nn as nn
from torch.nn import functional as F


def with_loss(logits, targets):
    """makemore's return value: logits, and the mean cross-entropy over targets that are not -1."""
    if targets is None:
        return logits, None
    return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


class NewGELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))
        self.n_head = n_head

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = F.softmax(att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf")), dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(n_embd, 4 * n_embd), c_proj=nn.Linear(4 * n_embd, n_embd),
                                      act=NewGELU()))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp.c_proj(self.mlp.act(self.mlp.c_fc(self.ln_2(x))))


class Transformer(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer=4, n_head=4, n_embd=64):
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd), wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([Block(n_embd, n_head, block_size) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd)))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx, targets=None):
        t = idx.size(1)
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t, device=idx.device))[None]
        for block in self.transformer.h:
            x = block(x)
        return with_loss(self.lm_head(self.transformer.ln_f(x)), targets)



class Bigram(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros((vocab_size, vocab_size)))

    def forward(self, idx, targets=None):
        return with_loss(self.logits[idx], targets)


class MLP(nn.Module):
    def __init__(self, vocab_size, block_size, n_embd=64, n_embd2=64):
        super().__init__()
        self.vocab_size, self.block_size = vocab_size, block_size
        self.wte = nn.Embedding(vocab_size + 1, n_embd)  # row vocab_size: BLANK, before the start
        self.mlp = nn.Sequential(nn.Linear(block_size * n_embd, n_embd2), nn.Tanh(), nn.Linear(n_embd2, vocab_size))

    def forward(self, idx, targets=None):
        embs = []
        for _ in range(self.block_size):  # tokens t, t-1, ...: shift right one more each time, BLANK in
            embs.append(self.wte(idx))
            idx = torch.roll(idx, 1, 1)
            idx[:, 0] = self.vocab_size
        return with_loss(self.mlp(torch.cat(embs, -1)), targets)


class RNNCell(nn.Module):
    def __init__(self, n_embd, n_embd2):
        super().__init__()
        self.xh_to_h = nn.Linear(n_embd + n_embd2, n_embd2)

    def forward(self, xt, hprev):
        return torch.tanh(self.xh_to_h(torch.cat([xt, hprev], dim=1)))


class GRUCell(nn.Module):
    def __init__(self, n_embd, n_embd2):
        super().__init__()
        self.xh_to_z = nn.Linear(n_embd + n_embd2, n_embd2)
        self.xh_to_r = nn.Linear(n_embd + n_embd2, n_embd2)
        self.xh_to_hbar = nn.Linear(n_embd + n_embd2, n_embd2)

    def forward(self, xt, hprev):
        xh = torch.cat([xt, hprev], dim=1)
        r = torch.sigmoid(self.xh_to_r(xh))
        hbar = torch.tanh(self.xh_to_hbar(torch.cat([xt, r * hprev], dim=1)))
        z = torch.sigmoid(self.xh_to_z(xh))
        return (1 - z) * hprev + z * hbar


class RNN(nn.Module):
    def __init__(self, vocab_size, cell_type, n_embd=64, n_embd2=64):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(1, n_embd2))
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.cell = {"rnn": RNNCell, "gru": GRUCell}[cell_type](n_embd, n_embd2)
        self.lm_head = nn.Linear(n_embd2, vocab_size)

    def forward(self, idx, targets=None):
        emb = self.wte(idx)
        hprev = self.start.expand((idx.size(0), -1))
        hiddens = []
        for i in range(idx.size(1)):
            hprev = self.cell(emb[:, i, :], hprev)
            hiddens.append(hprev)
        return with_loss(self.lm_head(torch.stack(hiddens, 1)), targets)


class CausalBoW(nn.Module):
    def __init__(self, block_size):
        super().__init__()
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, block_size, block_size))

    def forward(self, x):
        B, T, C = x.size()
        att = torch.zeros((B, T, T)).masked_fill(self.bias[:, :T, :T] == 0, float("-inf"))
        return F.softmax(att, dim=-1) @ x


class BoWBlock(nn.Module):
    def __init__(self, block_size, n_embd, n_embd2):
        super().__init__()
        self.cbow = CausalBoW(block_size)
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(n_embd, n_embd2), c_proj=nn.Linear(n_embd2, n_embd)))

    def forward(self, x):
        x = x + self.cbow(x)
        return x + self.mlp.c_proj(torch.tanh(self.mlp.c_fc(x)))


class BoW(nn.Module):
    def __init__(self, vocab_size, block_size, n_embd=64, n_embd2=64):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.context_block = BoWBlock(block_size, n_embd, n_embd2)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))[None]
        return with_loss(self.lm_head(self.context_block(x)), targets)


class LSTM(nn.Module):
    """Not in makemore: its RNN frame with torch's LSTM cell, the cell state starting at zeros."""

    def __init__(self, vocab_size, n_embd=64, n_embd2=64):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(1, n_embd2))
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.cell = nn.LSTMCell(n_embd, n_embd2)
        self.lm_head = nn.Linear(n_embd2, vocab_size)

    def forward(self, idx, targets=None):
        emb = self.wte(idx)
        h = self.start.expand((idx.size(0), -1))
        c = torch.zeros_like(h)
        hiddens = []
        for i in range(idx.size(1)):
            h, c = self.cell(emb[:, i, :], (h, c))
            hiddens.append(h)
        return with_loss(self.lm_head(torch.stack(hiddens, 1)), targets)


def create(model_type, vocab_size, block_size, n_layer=4, n_head=4, n_embd=64, n_embd2=64):
    """The PyTorch model of a makemore type (or the LSTM in makemore's frame), at these sizes."""
    if model_type == "transformer":
        return Transformer(vocab_size, block_size, n_layer, n_head, n_embd)
    if model_type in ("rnn", "gru"):
        return RNN(vocab_size, model_type, n_embd, n_embd2)
    return {"bigram": lambda: Bigram(vocab_size), "mlp": lambda: MLP(vocab_size, block_size, n_embd, n_embd2),
            "bow": lambda: BoW(vocab_size, block_size, n_embd, n_embd2),
            "lstm": lambda: LSTM(vocab_size, n_embd, n_embd2)}[model_type]()


class MakemoreWords(torch.utils.data.Dataset):
    """makemore.py's CharDataset: each item encodes its word in Python when the DataLoader asks."""

    def __init__(self, vocab, words):
        self.stoi, self.words, self.block_size = {c: i + 1 for i, c in enumerate(vocab.chars)}, words, vocab.block_size

    def __len__(self):
        return len(self.words)

    def __getitem__(self, i):
        ix = torch.tensor([self.stoi[c] for c in self.words[i]], dtype=torch.long)
        x, y = torch.zeros(self.block_size, dtype=torch.long), torch.zeros(self.block_size, dtype=torch.long)
        x[1:1 + len(ix)], y[:len(ix)] = ix, ix
        y[len(ix) + 1:] = -1
        return x, y


def batches(dataset, loader="makemore", workers=4):
    """Endless training batches of 32: makemore.py's DataLoader (its 4 workers, sampling with replacement),
    or ("tensors") indexing pre-encoded tensors (no data pipeline: a stricter baseline than makemore.py)."""
    if loader == "makemore":
        warnings.filterwarnings("ignore", "This DataLoader will create 4 worker")  # makemore's default on 2 cores
        sampler = torch.utils.data.RandomSampler(range(len(dataset.train_words)), replacement=True,
                                                 num_samples=10**10)
        # forking a process with jax's threads can deadlock; makemore.py (no jax) forks
        context = "spawn" if workers and "jax" in sys.modules else None
        yield from torch.utils.data.DataLoader(MakemoreWords(dataset.vocab, dataset.train_words), batch_size=32,
                                               sampler=sampler, num_workers=workers, multiprocessing_context=context)
    x_nt, y_nt = (torch.from_numpy(a).long() for a in dataset.vocab.encode_words(dataset.train_words))
    while True:
        ix = torch.randint(len(x_nt), (32,))
        yield x_nt[ix], y_nt[ix]
