"""Synthetic <user, context, item> click days with a hidden Teacher (`matta generate`).

The world (derived from the seed):
  * users: Zipf-distributed activity, an age bucket, 1-6 interests (multi-valued), a latent
    factor built from their interests + age + an individual part;
  * items: Zipf-distributed popularity that drifts every day (random walk on log-popularity),
    new items every day (the catalogue grows, fresh items get a decaying boost), a category,
    1-5 tags (multi-valued, mostly from the category's tag pool), a price, a latent factor built
    from tags + category + an individual part;
  * context per event: hour (daily cycle), device, slot position.

The hidden Teacher is a fixed random non-linear model with clearly more capacity than the default
Student: a rank-`latent_dim` (48) user x item interaction whose interest x tag part has a slowly
decaying spectrum (a 16-dim model captures only part of it, a 32-64-dim model more), an
interest/tag overlap count, context x category and age x category tables, position and
freshness effects, and a random 2-layer MLP over projected latents, context and dense features.
The true click probability adds a hidden per-(user, item) noise term n ~ N(0, noise_std^2) the
Teacher does not see: `click ~ Bernoulli(sigmoid(z + n))`. The Teacher reports its best guess
without n, `teacher_prob = E_n[sigmoid(z + n)] ~= sigmoid(z / sqrt(1 + pi noise_std^2 / 8))`
(calibrated against clicks, same ranking as z). The logit scale and offset are
calibrated once per world so the CTR is about `target_ctr` and AUC(teacher_prob, click) is ~0.8.

Everything is vectorised numpy; days are written in chunks of `part_rows` rows (one part file
each) so a day of any size never sits in memory, each day atomically (see `partitions`). Random
streams are keyed by (seed, purpose, day, chunk): the same arguments give byte-identical files,
and day d does not depend on how many days follow it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from recsys_matta.data.hashing import splitmix64
from recsys_matta.data.partitions import PART_ROWS, day_writer
from recsys_matta.errors import UserError
from recsys_matta.specs.feature_spec import Partition

N_AGE, N_INTERESTS, N_HOURS, N_DEVICES, N_CATEGORIES, N_TAGS = 8, 64, 24, 4, 32, 128
MAX_INTERESTS, MAX_TAGS, N_POSITIONS = 6, 5, 10
_STREAM = {
    "users": 1,
    "items": 2,
    "teacher": 3,
    "events": 4,
    "drift": 5,
    "calibrate": 6,
    "catalogue": 7,
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the synthetic world. The defaults are what `matta generate` uses.

    Args:
        n_users: number of users.
        n_items: items in the catalogue on the first day.
        new_items_per_day: items added to the catalogue every following day.
        latent_dim: rank of the Teacher's user x item interaction.
        user_zipf: Zipf exponent of user activity.
        item_zipf: Zipf exponent of item popularity.
        popularity_drift: std of the daily random-walk step of an item's log-popularity.
        fresh_boost: log-popularity boost of a new item (decays with a 3-day time constant).
        teacher_scale: std of the Teacher logit.
        noise_std: std of the hidden per-(user, item) logit noise the Teacher does not see.
        target_ctr: click-through rate the logit offset is calibrated to.
    """

    n_users: int = 10_000
    n_items: int = 6_000
    new_items_per_day: int = 300
    latent_dim: int = 48
    user_zipf: float = 0.8
    item_zipf: float = 1.05
    popularity_drift: float = 0.25
    fresh_boost: float = 1.0
    teacher_scale: float = 1.5
    noise_std: float = 0.8
    target_ctr: float = 0.10


def _rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAM[stream], *keys]))


def _zipf_weights(n: int, a: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights 1/rank^a assigned to a random permutation of n entities. (n,) sums to 1."""
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** a
    w = w[rng.permutation(n)]
    return w / w.sum()


def _multi_hot_sample(
    rng: np.random.Generator, n: int, k_max: int, probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """n rows of 1..k_max distinct ids drawn with `probs` (rows, vocab). Returns a padded
    (n, k_max) id matrix (sorted per row, -1 padding) and the (n,) counts."""
    counts = rng.integers(1, k_max + 1, size=n)
    # Gumbel top-k = sampling without replacement with the given probabilities.
    keys = np.log(probs) + rng.gumbel(size=probs.shape)  # (n, vocab)
    top = np.argsort(-keys, axis=1)[:, :k_max]  # (n, k_max)
    top = np.where(np.arange(k_max)[None, :] < counts[:, None], top, np.iinfo(np.int64).max)
    top = np.sort(top, axis=1)
    return np.where(top == np.iinfo(np.int64).max, -1, top).astype(np.int64), counts


def _bitmask(ids: np.ndarray, id_to_bit: np.ndarray) -> np.ndarray:
    """OR of 1 << id_to_bit[id] over each padded row of ids (-1 = padding). (n, k) -> (n,)."""
    bits = np.where(ids >= 0, np.uint64(1) << id_to_bit[np.maximum(ids, 0)].astype(np.uint64), 0)
    return np.bitwise_or.reduce(bits.astype(np.uint64), axis=1)


def _spectrum(r: int) -> np.ndarray:
    """Per-dimension scale of the latent interaction: slowly decaying, so a model of rank 16
    misses a good part of it and rank 32-64 captures more. (r,)"""
    s = (1.0 + np.arange(r)) ** -0.3
    return np.sqrt(s / np.sqrt((s**2).sum()))


@dataclass
class Teacher:
    """The hidden Teacher's fixed random parameters (see module docstring)."""

    interest_latent: np.ndarray  # (N_INTERESTS, r)
    tag_latent: np.ndarray  # (N_TAGS, r)
    age_latent: np.ndarray  # (N_AGE, r)
    category_latent: np.ndarray  # (N_CATEGORIES, r)
    tag_topic: np.ndarray  # (N_TAGS,) interest id each tag belongs to
    ctx_cat: np.ndarray  # (N_HOURS, N_DEVICES, N_CATEGORIES)
    age_cat: np.ndarray  # (N_AGE, N_CATEGORIES)
    hour_emb: np.ndarray  # (N_HOURS, 4)
    device_emb: np.ndarray  # (N_DEVICES, 2)
    category_emb: np.ndarray  # (N_CATEGORIES, 4)
    proj_user: np.ndarray  # (r, 8)
    proj_item: np.ndarray  # (r, 8)
    w1: np.ndarray  # (8 + 8 + 4 + 2 + 4 + 4, 64)
    b1: np.ndarray  # (64,)
    w2: np.ndarray  # (64,)
    offset: float = 0.0
    scale: float = 1.0

    @staticmethod
    def random(rng: np.random.Generator, r: int) -> Teacher:
        n = rng.standard_normal
        d_in = 8 + 8 + 4 + 2 + 4 + 4
        t = Teacher(
            interest_latent=n((N_INTERESTS, r)),
            tag_latent=n((N_TAGS, r)),
            age_latent=0.5 * n((N_AGE, r)),
            category_latent=0.7 * n((N_CATEGORIES, r)),
            tag_topic=rng.integers(0, N_INTERESTS, N_TAGS),
            ctx_cat=0.25 * n((N_HOURS, N_DEVICES, N_CATEGORIES))
            + 0.35 * n((1, N_DEVICES, N_CATEGORIES)),
            age_cat=0.5 * n((N_AGE, N_CATEGORIES)),
            hour_emb=n((N_HOURS, 4)),
            device_emb=n((N_DEVICES, 2)),
            category_emb=n((N_CATEGORIES, 4)),
            proj_user=n((r, 8)) / np.sqrt(r),
            proj_item=n((r, 8)) / np.sqrt(r),
            w1=n((d_in, 64)) / np.sqrt(d_in),
            b1=0.5 * n(64),
            w2=n(64) / np.sqrt(64),
        )
        for name in t.__dataclass_fields__:  # float32 everywhere: 2x faster matmuls
            v = getattr(t, name)
            if isinstance(v, np.ndarray) and v.dtype == np.float64:
                setattr(t, name, v.astype(np.float32))
        return t

    def components(
        self, u: Entities, i: Entities, ev: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The additive terms of the un-calibrated logit of events (each (N,) float32); `ev`
        holds per-event user/item row indices and context (see `World._sample`)."""
        ui, ii = ev["user_idx"], ev["item_idx"]
        lu, li = u.latent[ui], i.latent[ii]  # (N, r)
        overlap = np.bitwise_count(u.mask[ui] & i.mask[ii]).astype(np.float32)  # (N,)
        cat, age = i.category[ii], u.age[ui]
        price = np.log1p(i.dense[ii]) - np.float32(3.0)  # (N,)
        position = ev["position"].astype(np.float32)
        x = np.concatenate(  # (N, 30) MLP input
            [
                u.proj[ui],
                i.proj[ii],
                self.hour_emb[ev["hour"]],
                self.device_emb[ev["device"]],
                self.category_emb[cat],
                np.stack(
                    [position / 5 - 1, price, np.log1p(u.dense[ui]) - 1.5, overlap - 0.5], axis=1
                ),
            ],
            axis=1,
            dtype=np.float32,
        )
        h = np.maximum(x @ self.w1 + self.b1, 0.0)  # (N, 64)
        return {
            "latent": 4.0 * np.einsum("nr,nr->n", lu, li) / np.sqrt(lu.shape[1]),
            "overlap": 0.6 * overlap,
            "context_x_category": self.ctx_cat[ev["hour"], ev["device"], cat],
            "age_x_category": self.age_cat[age, cat],
            "bias": u.bias[ui] + i.bias[ii],
            "position_freshness": -0.12 * position
            + 0.6 * np.exp(-ev["item_age_days"].astype(np.float32) / 5),
            "price_x_age": -0.3 * price * (age >= 4),
            "mlp": 1.5 * (h @ self.w2),
        }

    def raw_logit(self, u: Entities, i: Entities, ev: dict[str, np.ndarray]) -> np.ndarray:
        """Un-calibrated logit of events. (N,) float64."""
        return np.sum(list(self.components(u, i, ev).values()), axis=0, dtype=np.float64)

    def logit(self, u: Entities, i: Entities, ev: dict[str, np.ndarray]) -> np.ndarray:
        return (self.raw_logit(u, i, ev) - self.offset) * self.scale


@dataclass
class Entities:
    """Users or items as columns (row index = entity index).

    Args:
        ids: (n,) int64 public ids.
        tokens: (n, k_max) int64 padded multi-valued ids (interests or tags; -1 = padding).
        counts: (n,) number of valid tokens per row.
        mask: (n,) uint64 bitmask of interest topics (for the overlap term).
        latent: (n, r) float32 latent factor.
        proj: (n, 8) float32 the latent projected for the Teacher's MLP.
        bias: (n,) float32 Teacher bias.
        dense: (n,) float32 activity (users) or price (items).
        age: (n,) int32 age bucket (users only).
        category: (n,) int32 category (items only).
        birth: (n,) int32 day index the item appeared (items only; <= 0 for the initial ones).
        log_pop: (n,) float64 log-popularity (drifts daily).
    """

    ids: np.ndarray
    tokens: np.ndarray
    counts: np.ndarray
    mask: np.ndarray
    latent: np.ndarray
    proj: np.ndarray
    bias: np.ndarray
    dense: np.ndarray
    log_pop: np.ndarray
    age: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    category: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    birth: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def extend(self, other: Entities) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))


def _make_users(cfg: SyntheticConfig, t: Teacher, seed: int) -> Entities:
    rng = _rng(seed, "users")
    n, r = cfg.n_users, cfg.latent_dim
    interest_pop = _zipf_weights(N_INTERESTS, 0.8, rng)
    tokens, counts = _multi_hot_sample(rng, n, MAX_INTERESTS, np.tile(interest_pop, (n, 1)))
    age = rng.choice(N_AGE, size=n, p=[0.05, 0.15, 0.2, 0.2, 0.15, 0.12, 0.08, 0.05])
    pop = _zipf_weights(n, cfg.user_zipf, rng)
    multi = np.where(tokens[..., None] >= 0, t.interest_latent[np.maximum(tokens, 0)], 0.0)
    latent = multi.sum(1) / np.sqrt(counts)[:, None] + t.age_latent[age]  # (n, r)
    latent = (latent + 0.8 * rng.standard_normal((n, r))) * _spectrum(r)
    return Entities(
        ids=rng.choice(2**40, size=n, replace=False).astype(np.int64) + 1,
        tokens=tokens,
        counts=counts,
        mask=_bitmask(tokens, np.arange(N_INTERESTS)),
        latent=latent.astype(np.float32),
        proj=(latent @ t.proj_user).astype(np.float32),
        bias=(0.4 * rng.standard_normal(n)).astype(np.float32),
        dense=(pop * n * rng.lognormal(0.0, 0.3, n)).astype(np.float32),  # activity ~ events/day
        log_pop=np.log(pop),
        age=age.astype(np.int32),
    )


def _make_items(cfg: SyntheticConfig, t: Teacher, seed: int, day: int, n: int) -> Entities:
    """`n` items born on day `day` (day 0: the initial catalogue, born up to a year earlier)."""
    rng = _rng(seed, "items", day)
    r = cfg.latent_dim
    cat_pop = _zipf_weights(N_CATEGORIES, 0.7, _rng(seed, "catalogue", 0))
    cat_tags = _rng(seed, "catalogue", 1).dirichlet(np.full(N_TAGS, 0.05), N_CATEGORIES)
    category = rng.choice(N_CATEGORIES, size=n, p=cat_pop)
    tag_probs = 0.8 * cat_tags[category] + 0.2 / N_TAGS  # (n, N_TAGS)
    tokens, counts = _multi_hot_sample(rng, n, MAX_TAGS, tag_probs)
    multi = np.where(tokens[..., None] >= 0, t.tag_latent[np.maximum(tokens, 0)], 0.0)
    latent = multi.sum(1) / np.sqrt(counts)[:, None] + t.category_latent[category]
    latent = (latent + 0.8 * rng.standard_normal((n, r))) * _spectrum(r)
    birth = rng.integers(-365, 1, n) if day == 0 else np.full(n, day)
    return Entities(
        ids=(day + 1) * 1_000_000 + np.arange(n, dtype=np.int64),  # unique while n < 1e6
        tokens=tokens,
        counts=counts,
        mask=_bitmask(tokens, t.tag_topic),
        latent=latent.astype(np.float32),
        proj=(latent @ t.proj_item).astype(np.float32),
        bias=(0.4 * rng.standard_normal(n)).astype(np.float32),
        dense=rng.lognormal(3.0 + 0.05 * (category % 8), 0.9, n).astype(np.float32),
        log_pop=np.log(_zipf_weights(n, cfg.item_zipf, rng) * n),
        category=category.astype(np.int32),
        birth=birth.astype(np.int32),
    )


def _hidden_noise(user_ids: np.ndarray, item_ids: np.ndarray, seed: int) -> np.ndarray:
    """Standard-normal noise that depends only on (seed, user, item): Box-Muller on two hashes."""
    with np.errstate(over="ignore"):
        key = splitmix64(user_ids.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        key = key ^ splitmix64(item_ids.view(np.uint64) + np.uint64(seed))
        h1, h2 = splitmix64(key), splitmix64(key + np.uint64(1))
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _deterministic_blas() -> threadpool_limits:
    """Single-threaded BLAS: a multi-threaded matmul may round differently with another thread
    count, and the same arguments must give the same bytes on any machine setting."""
    return threadpool_limits(limits=1, user_api="blas")


_HOUR_W = 1.0 + 0.8 * np.sin((np.arange(N_HOURS) - 9) / 24 * 2 * np.pi) + 0.3
_HOUR_P = _HOUR_W / _HOUR_W.sum()
_DEVICE_P = np.array([0.55, 0.3, 0.1, 0.05])
_POS_P = 0.75 ** np.arange(N_POSITIONS) / (0.75 ** np.arange(N_POSITIONS)).sum()


class World:
    """Users, the growing item catalogue and the Teacher of one seed; `advance_to(day)` applies
    the daily drift, `events(day, chunk, n)` samples a chunk of events as an arrow table."""

    def __init__(self, seed: int, cfg: SyntheticConfig | None = None) -> None:
        self.seed, self.cfg = seed, cfg or SyntheticConfig()
        with _deterministic_blas():
            self.teacher = Teacher.random(_rng(seed, "teacher"), self.cfg.latent_dim)
            self.users = _make_users(self.cfg, self.teacher, seed)
            self.items = _make_items(self.cfg, self.teacher, seed, 0, self.cfg.n_items)
            self.day = 0
            self._user_cdf = np.cumsum(np.exp(self.users.log_pop))
            self._calibrate()

    def advance_to(self, day: int) -> None:
        """Drift popularity and add new items, one day at a time, up to `day`."""
        if day < self.day:
            raise ValueError(f"the world is at day {self.day}; it cannot go back to day {day}")
        while self.day < day:
            self.day += 1
            rng = _rng(self.seed, "drift", self.day)
            self.items.log_pop += self.cfg.popularity_drift * rng.standard_normal(
                len(self.items.ids)
            )
            n_new = self.cfg.new_items_per_day
            self.items.extend(_make_items(self.cfg, self.teacher, self.seed, self.day, n_new))

    def _sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Per-event indices and context for n events of the current day."""
        age = self.day - self.items.birth  # (I,) days since each item appeared
        fresh = np.where(self.items.birth > 0, np.exp(-age / 3.0), 0.0)  # new items get a boost
        log_w = self.items.log_pop + self.cfg.fresh_boost * fresh
        item_cdf = np.cumsum(np.exp(log_w - log_w.max()))
        ui = np.searchsorted(self._user_cdf, rng.random(n) * self._user_cdf[-1], side="right")
        ii = np.searchsorted(item_cdf, rng.random(n) * item_cdf[-1], side="right")
        ui = np.minimum(ui, len(self._user_cdf) - 1)
        ii = np.minimum(ii, len(item_cdf) - 1)
        return {
            "user_idx": ui,
            "item_idx": ii,
            "hour": rng.choice(N_HOURS, size=n, p=_HOUR_P),
            "device": rng.choice(N_DEVICES, size=n, p=_DEVICE_P),
            "position": rng.choice(N_POSITIONS, size=n, p=_POS_P).astype(np.float64),
            "item_age_days": (age[ii] + rng.random(n)).astype(np.float64),
        }

    def _calibrate(self) -> None:
        """Set the Teacher's offset/scale so the logit has std `teacher_scale` and the CTR is
        `target_ctr`, measured on a fixed sample of day-0 events."""
        rng = _rng(self.seed, "calibrate")
        ev = self._sample(rng, 20_000)
        raw = self.teacher.raw_logit(self.users, self.items, ev)
        self.teacher.scale = self.cfg.teacher_scale / raw.std()
        z = (raw - raw.mean()) * self.teacher.scale
        noise = self.cfg.noise_std * _hidden_noise(
            self.users.ids[ev["user_idx"]], self.items.ids[ev["item_idx"]], self.seed
        )
        lo, hi = -20.0, 20.0  # bisection on the offset b: mean(sigmoid(z + noise + b)) = target
        for _ in range(60):
            b = (lo + hi) / 2
            if np.mean(1 / (1 + np.exp(-(z + noise + b)))) < self.cfg.target_ctr:
                lo = b
            else:
                hi = b
        self.teacher.offset = raw.mean() - b / self.teacher.scale

    def events(self, day: int, chunk: int, n: int) -> pa.Table:
        """Chunk `chunk` of day `day`: n events as an arrow table (columns of synthetic.yaml)."""
        with _deterministic_blas():
            return self._events(day, chunk, n)

    def _events(self, day: int, chunk: int, n: int) -> pa.Table:
        self.advance_to(day)
        rng = _rng(self.seed, "events", day, chunk)
        ev = self._sample(rng, n)
        u, i = self.users, self.items
        ui, ii = ev["user_idx"], ev["item_idx"]
        z = self.teacher.logit(u, i, ev)  # (n,)
        noise = self.cfg.noise_std * _hidden_noise(u.ids[ui], i.ids[ii], self.seed)
        p_true = 1.0 / (1.0 + np.exp(-(z + noise)))
        click = (rng.random(n) < p_true).astype(np.int8)
        z_teacher = z / np.sqrt(1.0 + np.pi * self.cfg.noise_std**2 / 8.0)  # E_n[sigmoid(z + n)]
        teacher = np.clip(1.0 / (1.0 + np.exp(-z_teacher)), 1e-6, 1 - 1e-6).astype(np.float32)
        return pa.table(
            {
                "user_id": pa.array(u.ids[ui]),
                "user_age": pa.array(u.age[ui]),
                "user_interests": _list_column(u.tokens[ui], u.counts[ui]),
                "user_activity": pa.array(u.dense[ui]),
                "hour": pa.array(ev["hour"].astype(np.int32)),
                "device": pa.array(ev["device"].astype(np.int32)),
                "position": pa.array(ev["position"].astype(np.float32)),
                "item_id": pa.array(i.ids[ii]),
                "item_category": pa.array(i.category[ii]),
                "item_tags": _list_column(i.tokens[ii], i.counts[ii]),
                "item_price": pa.array(i.dense[ii]),
                "item_age_days": pa.array(ev["item_age_days"].astype(np.float32)),
                "teacher_prob": pa.array(teacher),
                "click": pa.array(click),
            }
        )


def _list_column(padded: np.ndarray, counts: np.ndarray) -> pa.ListArray:
    """(n, k_max) padded ids (-1 = padding, valid ids first) -> list<int64> array."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    values = padded[padded >= 0]  # row-major: each row's ids stay together and in order
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.int64()))


def generate(
    out: Path,
    days: int,
    rows_per_day: int,
    seed: int,
    start_date: date,
    config: SyntheticConfig | None = None,
    part_rows: int = PART_ROWS,
    progress: bool = True,
) -> list[Path]:
    """Write `days` days of `rows_per_day` events to `<out>/day=YYYY-MM-DD/part-*.parquet`.

    Args:
        out: output root.
        days: number of consecutive days, starting at `start_date`.
        rows_per_day: events per day.
        seed: seed of the world, the Teacher and the events (same arguments, same bytes).
        start_date: date of the first day.
        config: world knobs (defaults: `SyntheticConfig()`).
        part_rows: rows per part file (= rows generated at a time).
        progress: show a progress bar on stderr (only when it is a terminal).

    Returns the day folders written.
    """
    if seed < 0:
        raise UserError(f"--seed {seed}: expected a non-negative integer")
    world = World(seed, config)
    partition = Partition()
    written = []
    bar = tqdm(
        total=days * rows_per_day,
        unit="rows",
        unit_scale=True,
        file=sys.stderr,
        disable=None if progress else True,
        desc="generate",
    )
    with bar:
        for d in range(days):
            day = start_date + timedelta(days=d)
            with day_writer(Path(out), partition, day, part_rows) as w:
                for chunk, start in enumerate(range(0, rows_per_day, part_rows)):
                    n = min(part_rows, rows_per_day - start)
                    w.write(world.events(d, chunk, n))
                    bar.update(n)
            written.append(Path(out) / f"day={day.isoformat()}")
    return written
