"""Raw clips listed in a CSV manifest → a keras-mre data set.

The manifest has one row per clip and the columns

| column | content |
|---|---|
| `id` | clip id, unique |
| `split` | split name (`train`, `valid`, `test`, …; letters, digits, `_`) |
| `text` | the transcript |
| `audio` | path of the audio file |
| `vision` | path of an OpenFace CSV (`vision="openface"`) or a video (`"mediapipe"`) |
| `label` | class name of the multimodal label |
| `label_text`, `label_audio`, `label_vision` | optional unimodal class names (empty = unknown) |

Relative paths are relative to the manifest's folder. A modality whose
column is absent is left out of the data set. Audio and video work runs in a
pool of `workers` processes; transcripts are encoded in batches in the main
process meanwhile.

```python
from keras_mre_pipelines.manifest import extract_manifest
info = extract_manifest("clips.csv", "data/mine", text_encoder="bert_preset_dir",
                        vision="openface", workers=2, on_error="skip")
```

Command line: `keras-mre extract --manifest clips.csv --out data/mine ...`
(see `add_parser`).
"""

import concurrent.futures
import contextlib
import csv
import dataclasses
import multiprocessing
import os
import platform
import re
import sys

from keras_mre.data import schema
from keras_mre.errors import ConfigError
from keras_mre.errors import DataError
from keras_mre.errors import KerasMREError

REQUIRED_COLUMNS = ("id", "split", "label")
MODALITY_COLUMNS = schema.DEFAULT_MODALITIES
MEDIA_MODALITIES = ("audio", "vision")
ON_ERROR = ("fail", "skip")
DEFAULT_TEXT_ENCODER = "bert_base_en_uncased"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclasses.dataclass
class ManifestRow:
    """One clip of a manifest.

    Attributes:
        line: line number in the CSV file (the header is line 1).
        id: clip id.
        split: split name.
        inputs: dict modality -> transcript (`text`) or absolute path.
        label: multimodal class name.
        unimodal_labels: dict modality -> class name, for the non-empty
            `label_<modality>` cells.
    """

    line: int
    id: str
    split: str
    inputs: dict
    label: str
    unimodal_labels: dict


def read_manifest(path):
    """Reads and validates a manifest CSV.

    Returns:
        `(rows, modalities)`: the `ManifestRow`s in file order and the
        modalities present, in the order text, audio, vision.

    Raises:
        DataError: missing file or column, duplicate id, empty required cell.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"manifest {path} does not exist")
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [(name or "").strip() for name in (reader.fieldnames or [])]
            reader.fieldnames = header
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"manifest {path} cannot be read as CSV ({error})") from error
    if not header:
        raise DataError(f"manifest {path} is empty (expected a header line)")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    separator = next((c for c in ";\t|" if len(header) == 1 and c in header[0]), None)
    if missing and separator:
        raise DataError(
            f"manifest {path} separates its columns with {separator!r}; "
            "expected a comma-separated CSV file"
        )
    if missing:
        raise DataError(
            f"manifest {path} lacks the column(s) {missing}; expected id, split, "
            "text, audio, vision, label"
        )
    modalities = [m for m in MODALITY_COLUMNS if m in header]
    if not modalities:
        raise DataError(
            f"manifest {path} has none of the modality columns {list(MODALITY_COLUMNS)}"
        )
    stray = [f"label_{m}" for m in MODALITY_COLUMNS if f"label_{m}" in header and m not in header]
    if stray:
        raise DataError(
            f"manifest {path} has {stray[0]!r} but no {stray[0][6:]!r} column"
        )
    if not records:
        raise DataError(f"manifest {path} has a header but no clip rows")
    rows = []
    seen = {}
    for number, record in enumerate(records, start=2):
        if None in record:
            raise DataError(
                f"manifest {path} line {number}: more fields than the "
                f"{len(header)} columns of the header"
            )
        cells = {k: (v or "") for k, v in record.items()}
        for column in REQUIRED_COLUMNS:
            if not cells[column].strip():
                raise DataError(f"manifest {path} line {number}: column {column!r} is empty")
        clip_id = cells["id"].strip()
        if clip_id in seen:
            raise DataError(
                f"manifest {path} line {number}: id {clip_id!r} repeats line {seen[clip_id]}"
            )
        seen[clip_id] = number
        split = cells["split"].strip()
        if not _SPLIT_NAME.match(split):
            raise DataError(
                f"manifest {path} line {number}: split {split!r} must be letters, digits and '_'"
            )
        inputs = {}
        for m in modalities:
            value = cells[m]
            if m == "text":
                inputs[m] = value
            else:
                value = value.strip()
                inputs[m] = os.path.normpath(os.path.join(base, value)) if value else ""
        unimodal = {
            m: cells[f"label_{m}"].strip()
            for m in modalities
            if cells.get(f"label_{m}", "").strip()
        }
        rows.append(ManifestRow(number, clip_id, split, inputs, cells["label"].strip(), unimodal))
    return rows, modalities


class _MediaJob:
    """The audio and visual extractors, run per clip in the worker pool."""

    def __init__(self, audio, vision):
        self.audio = audio
        self.vision = vision

    def __call__(self, inputs):
        """Returns `(features, dropped, errors)` dicts keyed by modality."""
        features, dropped, errors = {}, {}, {}
        for modality, extractor in (("audio", self.audio), ("vision", self.vision)):
            if extractor is None:
                continue
            path = inputs[modality]
            try:
                if not path:
                    raise DataError(f"no {modality} file given")
                if modality == "vision":
                    frames = extractor.read(path)
                    features[modality], dropped[modality] = frames.features, frames.dropped
                else:
                    features[modality] = extractor(path)
            except KerasMREError as error:
                errors[modality] = str(error)
            except Exception as error:  # a decoder failing on a malformed file
                errors[modality] = f"{path}: {type(error).__name__}: {error}"
        return features, dropped, errors


_WORKER_JOB = None


def _init_worker(job):
    global _WORKER_JOB
    _WORKER_JOB = job


def _run_in_worker(inputs):
    return _WORKER_JOB(inputs)


@contextlib.contextmanager
def _single_threaded_children():
    """Worker processes started inside use one BLAS/OpenMP thread each.

    Each worker is one unit of parallelism; nested thread pools would only
    compete for the same cores.
    """
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"extract_manifest: {name} must be one of {list(choices)}, got {value!r}")


def extract_manifest(
    manifest_csv,
    out_dir,
    *,
    text_encoder=DEFAULT_TEXT_ENCODER,
    vision="openface",
    face_model=None,
    workers=1,
    on_error="fail",
    max_lengths=None,
    overwrite=False,
    class_names=None,
    name=None,
    text_max_length=50,
    text_batch_size=32,
    audio_options=None,
    min_confidence=0.8,
    frame_stride=1,
    shard_size=1000,
    compression=None,
    progress=True,
):
    """Extracts features of every clip of a manifest and writes a data set.

    Args:
        manifest_csv: path of the manifest CSV (see the module docstring).
        out_dir: data set directory to write.
        text_encoder: keras-hub BERT preset name or local preset directory.
        vision: `"openface"` (the `vision` column holds OpenFace CSVs) or
            `"mediapipe"` (it holds videos; needs `face_model`).
        face_model: path of a MediaPipe `face_landmarker.task` model.
        workers: processes for audio and video work (1 = in this process).
        on_error: `"fail"` raises `DataError` naming the first bad clip;
            `"skip"` leaves bad clips out and lists them, with the reason,
            in the summary and in `dataset.json` (`skipped`).
        max_lengths: dict modality -> maximum frames stored; a modality not
            given gets the longest clip's length (text: at most
            `text_max_length` tokens).
        overwrite: replace an existing data set at `out_dir`.
        class_names: class list; default the sorted set of all labels in
            the manifest (multimodal and unimodal).
        name: data set name; default the manifest's file name stem.
        text_max_length: BERT sequence length, `[CLS]` and `[SEP]` included.
        text_batch_size: transcripts per forward pass.
        audio_options: keyword arguments of `AudioFeatureExtractor`.
        min_confidence: OpenFace confidence below which frames are dropped.
        frame_stride: analyse every n-th video frame (MediaPipe).
        shard_size: clips per TFRecord shard.
        compression: None or `"GZIP"`.
        progress: show progress bars and print the summary to stderr.

    Returns:
        The `DatasetInfo` of the written data set.

    Raises:
        ConfigError: invalid option, unusable text encoder or face model.
        DataError: invalid manifest, or a bad clip with `on_error="fail"`,
            or no clip left to write.
    """
    from keras_mre.data import Clip
    from keras_mre.data import write_dataset
    from keras_mre_pipelines.audio import AudioFeatureExtractor
    from keras_mre_pipelines.vision import VISION_EXTRACTORS
    from keras_mre_pipelines.vision import make_vision_extractor

    _check_choice("on_error", on_error, ON_ERROR)
    _check_choice("vision", vision, VISION_EXTRACTORS)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"extract_manifest: workers must be a positive integer, got {workers!r}")
    if os.path.lexists(out_dir) and not overwrite:
        # Checked before the extraction, which may take hours.
        raise DataError(
            f"{os.path.abspath(out_dir)}: already exists; pass overwrite=True (--overwrite) "
            "to replace it"
        )
    rows, modalities = read_manifest(manifest_csv)
    manifest_csv = os.path.abspath(os.fspath(manifest_csv))

    labels = {row.label for row in rows}
    for row in rows:
        labels.update(row.unimodal_labels.values())
    if class_names is None:
        class_names = sorted(labels)
    else:
        class_names = [str(c) for c in class_names]
        if len(set(class_names)) != len(class_names) or not class_names:
            raise ConfigError(f"extract_manifest: class_names must be distinct and non-empty, got {class_names}")
        for row in rows:
            for column, value in [("label", row.label)] + [
                (f"label_{m}", v) for m, v in row.unimodal_labels.items()
            ]:
                if value not in class_names:
                    raise DataError(
                        f"manifest {manifest_csv} line {row.line} column {column!r}: class "
                        f"{value!r} is not in class_names {class_names}"
                    )
    class_ids = {c: i for i, c in enumerate(class_names)}
    if max_lengths is not None:
        unknown = sorted(set(max_lengths) - set(modalities))
        if unknown:
            raise ConfigError(
                f"extract_manifest: max_lengths names {unknown[0]!r}, the manifest has {modalities}"
            )

    audio = AudioFeatureExtractor(**(audio_options or {})) if "audio" in modalities else None
    visual = None
    if "vision" in modalities:
        visual = make_vision_extractor(
            vision, face_model=face_model, min_confidence=min_confidence, frame_stride=frame_stride
        )
    encoder = None
    if "text" in modalities:
        from keras_mre_pipelines.text import TextFeatureExtractor

        encoder = TextFeatureExtractor(
            text_encoder, max_length=text_max_length, batch_size=text_batch_size
        )

    failures = {}  # row index -> {modality: cause}

    def fail_or_record(index, modality, cause):
        row = rows[index]
        if on_error == "fail":
            raise DataError(
                f"clip {row.id!r} (manifest line {row.line}) {modality}: {cause}"
            )
        failures.setdefault(index, {})[modality] = cause

    features = [dict() for _ in rows]
    dropped_frames = {}

    # Transcripts are checked first: an empty one fails before any heavy work.
    text_indices = []
    if encoder is not None:
        for index, row in enumerate(rows):
            try:
                encoder.check(row.inputs["text"])
                text_indices.append(index)
            except DataError as error:
                fail_or_record(index, "text", str(error))

    job = _MediaJob(audio, visual)
    media = [i for i in range(len(rows)) if job.audio or job.vision]
    bar_options = {"disable": not progress, "unit": "clip", "file": sys.stderr}

    def take(index, result):
        clip_features, clip_dropped, errors = result
        for modality, cause in errors.items():
            fail_or_record(index, modality, cause)
        features[index].update(clip_features)
        for modality, counts in clip_dropped.items():
            totals = dropped_frames.setdefault(modality, {})
            for reason, count in counts.items():
                totals[reason] = totals.get(reason, 0) + int(count)

    def encode_texts():
        from tqdm.auto import tqdm

        batch = encoder.batch_size
        with tqdm(total=len(text_indices), desc="text", **bar_options) as bar:
            for start in range(0, len(text_indices), batch):
                chunk = text_indices[start : start + batch]
                encoded = encoder(
                    [rows[i].inputs["text"] for i in chunk],
                    sources=[f"clip {rows[i].id!r}" for i in chunk],
                )
                for index, array in zip(chunk, encoded):
                    features[index]["text"] = array
                bar.update(len(chunk))

    from tqdm.auto import tqdm

    if workers == 1 or not media:
        if encoder is not None:
            encode_texts()
        for index in tqdm(media, desc="audio/vision", **bar_options):
            take(index, job(rows[index].inputs))
    else:
        with _single_threaded_children():
            pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(job,),
            )
            with pool:
                try:
                    futures = {pool.submit(_run_in_worker, rows[i].inputs): i for i in media}
                    if encoder is not None:
                        encode_texts()
                    done = concurrent.futures.as_completed(futures)
                    for future in tqdm(done, total=len(futures), desc="audio/vision", **bar_options):
                        take(futures[future], future.result())
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise

    skipped = []
    kept = []
    for index, row in enumerate(rows):
        if index in failures:
            reason = "; ".join(f"{m}: {cause}" for m, cause in failures[index].items())
            skipped.append({"id": row.id, "split": row.split, "reason": reason})
        else:
            kept.append(index)
    if not kept:
        first = skipped[0]
        raise DataError(
            f"manifest {manifest_csv}: no clip could be extracted ({len(skipped)} skipped; "
            f"first: clip {first['id']!r}: {first['reason']})"
        )

    extractors = {"text": encoder, "audio": audio, "vision": visual}
    feature_dims = {m: int(extractors[m].feature_dim) for m in modalities}
    longest = {m: max(1, max(len(features[i][m]) for i in kept)) for m in modalities}
    lengths = dict(longest)
    for modality, value in (max_lengths or {}).items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(
                f"extract_manifest: max_lengths[{modality!r}] must be a positive integer, got {value!r}"
            )
        lengths[modality] = value

    splits = {}
    for index in kept:
        row = rows[index]
        splits.setdefault(row.split, []).append(
            Clip(
                id=row.id,
                features={m: features[index][m] for m in modalities},
                label=class_ids[row.label],
                unimodal_labels={m: class_ids[c] for m, c in row.unimodal_labels.items()},
            )
        )
    has_unimodal = {m: any(m in r.unimodal_labels for r in rows) for m in modalities}
    provenance = {
        "source": "manifest",
        "manifest": manifest_csv,
        "extractor": "keras_mre_pipelines.manifest.extract_manifest",
        "extractors": {m: extractors[m].provenance() for m in modalities},
        "options": {"on_error": on_error, "workers": workers, "vision": vision},
        "clips": {"listed": len(rows), "extracted": len(kept), "skipped": len(skipped)},
        "dropped_frames": dropped_frames,
        "longest": longest,
        "versions": {"python": platform.python_version(), "keras_mre": _package_version()},
    }
    info = write_dataset(
        out_dir,
        splits,
        feature_dims=feature_dims,
        class_names=class_names,
        max_lengths=lengths,
        name=name or os.path.splitext(os.path.basename(manifest_csv))[0],
        unimodal_labels=has_unimodal,
        provenance=provenance,
        skipped=skipped,
        overwrite=overwrite,
        shard_size=shard_size,
        compression=compression,
        progress=progress,
    )
    if progress:
        print(format_summary(info), file=sys.stderr)
    return info


def _package_version():
    import keras_mre

    return keras_mre.__version__


def format_summary(info):
    """A few lines saying what was extracted, dropped and skipped, and why."""
    provenance = info.provenance or {}
    clips = provenance.get("clips", {})
    lines = [
        f"extracted {info.num_clips} of {clips.get('listed', info.num_clips)} clips into "
        f"{info.path}: " + ", ".join(f"{s} {n}" for s, n in info.splits.items()),
        "features: " + ", ".join(
            f"{m} {info.feature_dims[m]}-d (max {info.max_lengths[m]} frames)" for m in info.modalities
        ),
    ]
    for modality, counts in sorted(provenance.get("dropped_frames", {}).items()):
        if any(counts.values()):
            lines.append(
                f"dropped {modality} frames: "
                + ", ".join(f"{reason} {n}" for reason, n in counts.items())
            )
    truncated = {m: n for m, n in (info.truncated or {}).items() if n}
    if truncated:
        lines.append("clips cut to max length: " + ", ".join(f"{m} {n}" for m, n in truncated.items()))
    count = len(info.skipped)
    lines.append(f"skipped {count} clip{'' if count == 1 else 's'}" + (":" if count else ""))
    for entry in info.skipped:
        lines.append(f"  {entry['split']}/{entry['id']}: {entry['reason']}")
    return "\n".join(lines)


def _parse_max_lengths(text):
    lengths = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        modality, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise ConfigError(
                f"--max-lengths: expected MODALITY=FRAMES[,...], e.g. audio=400,vision=55; got {part!r}"
            )
        lengths[modality.strip()] = int(value)
    return lengths


def _handle(args):
    info = extract_manifest(
        args.manifest,
        args.out,
        text_encoder=args.text_encoder,
        vision=args.vision,
        face_model=args.face_model,
        workers=args.workers,
        on_error=args.on_error,
        max_lengths=_parse_max_lengths(args.max_lengths) if args.max_lengths else None,
        overwrite=args.overwrite,
        class_names=[c.strip() for c in args.classes.split(",")] if args.classes else None,
        name=args.name,
        text_max_length=args.text_max_length,
        min_confidence=args.min_confidence,
        frame_stride=args.frame_stride,
        progress=not args.quiet,
    )
    if args.quiet:
        print(format_summary(info))
    return 0


def add_parser(subparsers):
    """Adds the `extract` sub-command to an argparse `subparsers` object."""
    parser = subparsers.add_parser(
        "extract",
        help="extract features of raw clips listed in a manifest CSV into a data set",
        description=(
            "Reads a manifest CSV (id, split, text, audio, vision, label, optional "
            "label_text/label_audio/label_vision; paths relative to the manifest), "
            "extracts BERT text, librosa audio and OpenFace or MediaPipe visual "
            "features, and writes a keras-mre data set."
        ),
    )
    parser.add_argument("--manifest", required=True, help="manifest CSV file")
    parser.add_argument("--out", required=True, help="data set directory to write")
    parser.add_argument(
        "--text-encoder", default=DEFAULT_TEXT_ENCODER,
        help="keras-hub BERT preset name or local preset directory (default %(default)s)",
    )
    parser.add_argument("--text-max-length", type=int, default=50,
                        help="BERT tokens per transcript incl. [CLS]/[SEP] (default 50)")
    parser.add_argument("--vision", choices=("openface", "mediapipe"), default="openface",
                        help="vision column holds OpenFace CSVs or videos (default openface)")
    parser.add_argument("--face-model", default=None,
                        help="MediaPipe face_landmarker.task file (--vision mediapipe)")
    parser.add_argument("--min-confidence", type=float, default=0.8,
                        help="drop OpenFace frames below this confidence (default 0.8)")
    parser.add_argument("--frame-stride", type=int, default=1,
                        help="analyse every n-th video frame (MediaPipe, default 1)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes for audio and video work (default 1)")
    parser.add_argument("--on-error", choices=ON_ERROR, default="fail",
                        help="fail on the first bad clip, or skip and list bad clips")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class list (default: sorted labels seen)")
    parser.add_argument("--max-lengths", default=None,
                        help="frames kept per modality, e.g. audio=400,vision=55")
    parser.add_argument("--name", default=None, help="data set name (default manifest name)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars; print the summary to stdout at the end")
    parser.set_defaults(handler=_handle)
    return parser
