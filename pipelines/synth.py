"""Relevance simulator: synthetic multimodal emotion data sets.

The simulator draws clips whose modalities do not always agree with the
multimodal label, as in the paper's SDME data set (section 4): each modality
carries its own unimodal label, equal to the multimodal label at a given rate
(by default vision 88.72 %, audio 59.47 %, text 75 %), and its frames are drawn
around the prototype of that unimodal label. Each modality of each clip also
gets an intensity: a weakly expressed modality says little about any label.
A model therefore has to judge, per clip, which modality to trust, which is
what MRE's relevance weights are for.

Generative model, per clip and modality `m` with unimodal label `u_m`:

    a_m ~ Uniform(intensity_low, intensity_high)            intensity
    b_m ~ Normal(0, clip_noise^2 I)                          clip offset
    T_m ~ Uniform{min_length_m .. max_length_m}              frames
    x_t = a_m * P_m[u_m] * (1 + 0.5 sin(2 pi t / T_m + phi_u)) + b_m + e_t
    e_t ~ Normal(0, frame_noise^2 I)

`P_m` holds one prototype per class, drawn once per seed with norm
`separation`. When a modality disagrees with the multimodal label, its label
is "neutral" with probability `neutral_share` (for a non-neutral clip) and
otherwise another class uniformly. Everything is deterministic per `seed`.
"""

import argparse
import dataclasses

import numpy as np

from keras_mre.data import Clip
from keras_mre.data import write_dataset
from keras_mre.errors import ConfigError

SDME_CLASSES = ("neutral", "happy", "sad", "angry", "anxious")
DEFAULT_AGREEMENT = {"text": 0.75, "audio": 0.5947, "vision": 0.8872}


@dataclasses.dataclass(frozen=True)
class Preset:
    """Shape of a simulated data set.

    Attributes:
        feature_dims: Modality -> frame width (ordered).
        max_lengths: Modality -> maximum frames.
        min_lengths: Modality -> minimum frames.
        splits: Split -> default number of clips.
        class_names: Class names; class 0 is "neutral".
    """

    feature_dims: dict
    max_lengths: dict
    min_lengths: dict
    splits: dict
    class_names: tuple = SDME_CLASSES


PRESETS = {
    # SDME's dims (BERT 768, librosa 33, OpenFace 35) and its 3667 clips,
    # split 70/10/20; short sequences keep the demo fast.
    "sdme": Preset(
        feature_dims={"text": 768, "audio": 33, "vision": 35},
        max_lengths={"text": 24, "audio": 48, "vision": 48},
        min_lengths={"text": 6, "audio": 12, "vision": 12},
        splits={"train": 2567, "valid": 367, "test": 733},
    ),
    # CMU-MOSEI's unaligned shapes (COVAREP 74, FACET 35) and split sizes.
    "mosei": Preset(
        feature_dims={"text": 768, "audio": 74, "vision": 35},
        max_lengths={"text": 50, "audio": 500, "vision": 500},
        min_lengths={"text": 10, "audio": 100, "vision": 100},
        splits={"train": 16326, "valid": 1871, "test": 4659},
    ),
    # CH-SIMS' unaligned shapes (librosa 33, OpenFace 709) and split sizes.
    "sims": Preset(
        feature_dims={"text": 768, "audio": 33, "vision": 709},
        max_lengths={"text": 39, "audio": 400, "vision": 55},
        min_lengths={"text": 10, "audio": 80, "vision": 15},
        splits={"train": 1368, "valid": 456, "test": 457},
    ),
}


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """Noise settings of the simulator (the same for every modality).

    Attributes:
        separation: Norm of each class prototype.
        clip_noise: Standard deviation per feature of the clip offset.
        frame_noise: Standard deviation per feature of the frame noise.
        intensity_low: Lower bound of the per-clip modality intensity.
        intensity_high: Upper bound of the per-clip modality intensity.
        neutral_share: Share of disagreeing unimodal labels that are
            "neutral" (class 0) when the multimodal label is not neutral.
    """

    separation: float = 1.5
    clip_noise: float = 0.3
    frame_noise: float = 1.0
    intensity_low: float = 0.0
    intensity_high: float = 1.5
    neutral_share: float = 0.5


def _split_counts(preset, num_clips):
    if num_clips is None:
        return dict(preset.splits)
    if isinstance(num_clips, dict):
        unknown = sorted(set(num_clips) - set(preset.splits))
        if unknown:
            raise ConfigError(
                f"synthesize: num_clips names unknown split {unknown[0]!r}, "
                f"expected {list(preset.splits)}"
            )
        counts = {s: int(num_clips.get(s, 0)) for s in preset.splits}
    else:
        if not isinstance(num_clips, (int, np.integer)) or num_clips < len(preset.splits):
            raise ConfigError(
                f"synthesize: num_clips must be an integer >= {len(preset.splits)} "
                f"or a dict split -> count, got {num_clips!r}"
            )
        total = sum(preset.splits.values())
        counts = {s: max(1, int(round(num_clips * n / total))) for s, n in preset.splits.items()}
        first = next(iter(counts))
        counts[first] += int(num_clips) - sum(counts.values())
    for split, count in counts.items():
        if count < 0:
            raise ConfigError(f"synthesize: num_clips[{split!r}] must be >= 0, got {count}")
    return counts


def _agreement(modalities, agreement):
    rates = {m: DEFAULT_AGREEMENT.get(m, 0.75) for m in modalities}
    for m, rate in (agreement or {}).items():
        if m not in rates:
            raise ConfigError(
                f"synthesize: agreement names unknown modality {m!r}, expected {list(rates)}"
            )
        if not 0.0 <= float(rate) <= 1.0:
            raise ConfigError(f"synthesize: agreement[{m!r}] must be in [0, 1], got {rate!r}")
        rates[m] = float(rate)
    return rates


class _Generator:
    """Draws clips of one data set; prototypes are fixed by the seed."""

    def __init__(self, preset, rates, difficulty, seed):
        self.preset = preset
        self.rates = rates
        self.difficulty = difficulty
        self.num_classes = len(preset.class_names)
        self.seed = int(seed)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0,)))
        self.prototypes = {}
        for m, dim in preset.feature_dims.items():
            p = rng.standard_normal((self.num_classes, dim))
            p *= difficulty.separation / np.linalg.norm(p, axis=1, keepdims=True)
            self.prototypes[m] = p.astype(np.float32)
        self.phases = rng.uniform(0, 2 * np.pi, size=self.num_classes)

    def _unimodal_label(self, rng, label, rate):
        if rng.random() < rate:
            return label
        if label != 0 and rng.random() < self.difficulty.neutral_share:
            return 0
        others = [c for c in range(self.num_classes) if c != label]
        return int(rng.choice(others))

    def clips(self, split_index, split, count):
        rng = np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(1, split_index))
        )
        d = self.difficulty
        for i in range(count):
            label = int(rng.integers(self.num_classes))
            features = {}
            unimodal = {}
            for m, dim in self.preset.feature_dims.items():
                u = self._unimodal_label(rng, label, self.rates[m])
                unimodal[m] = u
                length = int(rng.integers(self.preset.min_lengths[m],
                                          self.preset.max_lengths[m] + 1))
                intensity = rng.uniform(d.intensity_low, d.intensity_high)
                t = np.arange(length, dtype=np.float32)
                envelope = 1.0 + 0.5 * np.sin(2 * np.pi * t / max(length, 1) + self.phases[u])
                offset = d.clip_noise * rng.standard_normal(dim, dtype=np.float32)
                frames = rng.standard_normal((length, dim), dtype=np.float32)
                frames *= d.frame_noise
                frames += offset
                frames += (intensity * envelope.astype(np.float32))[:, None] * self.prototypes[m][u]
                features[m] = frames
            yield Clip(id=f"{split}-{i:05d}", features=features, label=label,
                       unimodal_labels=unimodal)


class _Split:
    """A sized, re-iterable view of one split's clip stream."""

    def __init__(self, generator, split_index, split, count):
        self.generator = generator
        self.split_index = split_index
        self.split = split
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        return self.generator.clips(self.split_index, self.split, self.count)


def synthesize(
    out_dir,
    *,
    preset="sdme",
    seed=0,
    num_clips=None,
    agreement=None,
    difficulty=None,
    name=None,
    shard_size=1000,
    compression=None,
    overwrite=False,
    progress=True,
):
    """Write a simulated data set.

    Args:
        out_dir: Target data set directory.
        preset: "sdme", "mosei" or "sims" (see `PRESETS`).
        seed: Random seed; the same seed and arguments give the same data.
        num_clips: None (the preset's split sizes), a total spread over the
            splits in the preset's proportions, or a dict split -> count.
        agreement: Dict modality -> rate at which the unimodal label equals
            the multimodal label (defaults: text 0.75, audio 0.5947,
            vision 0.8872).
        difficulty: A `Difficulty` (noise settings), default `Difficulty()`.
        name: Data set name (default `synth-<preset>`).
        shard_size: Clips per shard file.
        compression: None or "GZIP".
        overwrite: Replace an existing data set directory.
        progress: Show progress bars.

    Returns:
        The `DatasetInfo` of the written data set. Every modality carries
        unimodal labels (`emotion_<m>`).
    """
    if preset not in PRESETS:
        raise ConfigError(f"synthesize: unknown preset {preset!r}, expected one of {sorted(PRESETS)}")
    spec = PRESETS[preset]
    counts = _split_counts(spec, num_clips)
    rates = _agreement(spec.feature_dims, agreement)
    difficulty = difficulty or Difficulty()
    generator = _Generator(spec, rates, difficulty, seed)
    clips_by_split = {
        split: _Split(generator, index, split, count)
        for index, (split, count) in enumerate(counts.items())
    }
    provenance = {
        "source": "keras-mre relevance simulator",
        "preset": preset,
        "seed": int(seed),
        "agreement": rates,
        "difficulty": dataclasses.asdict(difficulty),
        "min_lengths": dict(spec.min_lengths),
    }
    return write_dataset(
        out_dir,
        clips_by_split,
        feature_dims=spec.feature_dims,
        class_names=list(spec.class_names),
        max_lengths=spec.max_lengths,
        name=name or f"synth-{preset}",
        unimodal_labels={m: True for m in spec.feature_dims},
        has_score=False,
        shard_size=shard_size,
        compression=compression,
        provenance=provenance,
        overwrite=overwrite,
        progress=progress,
    )


def _parse_agreement(text):
    rates = {}
    for item in text.split(","):
        modality, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected MODALITY=RATE, got {item!r}")
        try:
            rates[modality.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"rate of {modality!r} is not a number: {value!r}") from None
    return rates


def _run(args):
    info = synthesize(
        args.out,
        preset=args.preset,
        seed=args.seed,
        num_clips=args.num_clips,
        agreement=args.agreement,
        shard_size=args.shard_size,
        compression=args.compression,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    splits = ", ".join(f"{s} {n}" for s, n in info.splits.items())
    dims = ", ".join(f"{m} {d}x{info.max_lengths[m]}" for m, d in info.feature_dims.items())
    print(f"wrote {info.path}: {info.name}, {info.num_classes} classes, {splits} clips; "
          f"features {dims}")
    return 0


def add_parser(subparsers):
    """Add the `synth` sub-command to an argparse `subparsers` object."""
    parser = subparsers.add_parser(
        "synth",
        help="write a simulated data set (SDME-like relevance simulator)",
        description="Write a simulated multimodal emotion data set whose modalities "
                    "agree with the multimodal label at configurable rates.",
    )
    parser.add_argument("--out", required=True, help="target data set directory")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="sdme")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-clips", type=int, default=None,
                        help="total clips over all splits (default: the preset's sizes)")
    parser.add_argument("--agreement", type=_parse_agreement, default=None,
                        metavar="M=RATE[,M=RATE]",
                        help="unimodal label agreement rates, e.g. vision=0.9,audio=0.6")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--compression", choices=["GZIP"], default=None)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing data set directory")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=_run)
    return parser
