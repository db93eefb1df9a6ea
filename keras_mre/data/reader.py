"""Reading keras-mre data sets: tf.data input pipelines and shard verification."""

import json
import numbers
import os

import numpy as np

from keras_mre.data import records
from keras_mre.data import schema
from keras_mre.data.info import DatasetInfo
from keras_mre.data.info import load_info
from keras_mre.errors import ConfigError
from keras_mre.errors import DataError

# Shuffle buffers hold serialized records; this bounds their memory.
_SHUFFLE_BUFFER_BYTES = 256 * 1024 * 1024
_MAX_SHUFFLE_BUFFER = 10000
_READ_BUFFER_BYTES = 8 * 1024 * 1024
# bucket_by's sorting windows hold serialized records too (three copies of
# one window at most); this sets their default size.
_BUCKET_WINDOW_BYTES = 64 * 1024 * 1024


def _resolve_info(path):
    if isinstance(path, DatasetInfo):
        if path.path is None:
            raise ConfigError("a DatasetInfo passed as path must come from load_info (info.path is None)")
        return path
    return load_info(path)


def _shard_files(info, split):
    files = info.shard_paths(split)
    for f in files:
        if not os.path.isfile(f):
            raise DataError(f"{f}: shard listed in dataset.json for split {split!r} is missing")
    return files


def _num_workers():
    """Workers of the strategy in scope, else of the `TF_CONFIG` cluster, else 1."""
    import tensorflow as tf

    if tf.distribute.has_strategy():
        resolver = getattr(tf.distribute.get_strategy(), "cluster_resolver", None)
        if resolver is not None:
            spec = resolver.cluster_spec()
            jobs = spec.jobs
            count = sum(spec.num_tasks(job) for job in ("chief", "worker") if job in jobs)
            return max(count, 1)
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except (ValueError, AttributeError):
        return 1
    if not isinstance(cluster, dict):
        return 1
    count = sum(len(cluster.get(job) or []) for job in ("chief", "worker"))
    return max(count, 1)


def shard_policy(num_files, num_workers):
    """The auto-shard policy for `num_files` shards read by `num_workers`.

    FILE when every worker gets the same number of shards (at least one),
    which keeps the workers' step counts equal; DATA otherwise (every worker
    reads all shards and keeps its own 1/N of the records).
    """
    import tensorflow as tf

    policy = tf.data.experimental.AutoShardPolicy
    if num_workers > 1 and num_files >= num_workers and num_files % num_workers == 0:
        return policy.FILE
    return policy.DATA


def _check_pool(info, pool):
    """`pool` as a tuple of modality names of `info`, or ConfigError."""
    if pool is None:
        return ()
    if isinstance(pool, str) or not all(isinstance(m, str) for m in pool):
        raise ConfigError(
            f"load_dataset: pool must be a list of modality names, got {pool!r}"
        )
    for m in pool:
        if m not in info.feature_dims:
            raise ConfigError(
                f"load_dataset: pool names unknown modality {m!r}; data set "
                f"{info.path} has {', '.join(info.modalities)}"
            )
    return tuple(pool)


def check_bucket_by(info, bucket_by, caller="load_dataset"):
    """`bucket_by` (see `load_dataset`) as a tuple of modality names of
    `info`; ConfigError, its message starting with `caller`, otherwise."""
    if bucket_by is None:
        return ()
    names = (bucket_by,) if isinstance(bucket_by, str) else bucket_by
    try:
        names = tuple(names)
    except TypeError:
        names = None
    if not names or not all(isinstance(m, str) for m in names):
        raise ConfigError(
            f"{caller}: bucket_by must be a modality name or a non-empty "
            f"list of them, got {bucket_by!r}"
        )
    for m in names:
        if m not in info.feature_dims:
            raise ConfigError(
                f"{caller}: bucket_by names unknown modality {m!r}; data set "
                f"{info.path} has {', '.join(info.modalities)}"
            )
    return names


def _length_sorted_batches(ds, max_lengths, batch_size, window, seed, shuffle, drop_remainder):
    """Batches of serialized records, grouped by length within windows.

    `ds` yields serialized records; `max_lengths` maps the modalities to
    sort by to the length each is cut to. Every `window * batch_size`
    records are sorted by the longest of those lengths (stable) and cut
    into batches of `batch_size`, yielded in a shuffled order when
    `shuffle` (else shortest first); the batch count equals that of
    `ds.batch(batch_size, drop_remainder)`, which is asserted where it is
    known. Each record is copied three times on its way (into its window,
    into its sorted place, into its batch), never more.
    """
    import tensorflow as tf

    expected = int(ds.batch(batch_size, drop_remainder=drop_remainder).cardinality())
    spec = {
        schema.length_key(m): tf.io.FixedLenFeature([], tf.int64) for m in max_lengths
    }
    seed_value = tf.constant(0 if seed is None else int(seed), tf.int64)

    def sort(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        key = tf.reduce_max(
            tf.stack(
                [tf.minimum(parsed[schema.length_key(m)], n) for m, n in max_lengths.items()]
            ),
            axis=0,
        )
        # Rows of one batch each, as indices into the window: the sorted
        # order, the last row padded with index 0 (cut off again below).
        count = tf.shape(serialized, out_type=tf.int64)[0]
        rows = (count + batch_size - 1) // batch_size
        order = tf.argsort(key, stable=True)
        order = tf.pad(order, [[0, rows * batch_size - count]])
        order = tf.reshape(order, [-1, batch_size])
        sizes = tf.minimum(count - tf.range(rows) * batch_size, batch_size)
        if shuffle:
            shuffled = tf.range(rows)
            if seed is None:
                shuffled = tf.random.shuffle(shuffled)
            else:
                # Seeded by `seed` and the window's first record, which the
                # seeded record shuffle made: the same on every worker.
                first = tf.strings.to_hash_bucket_fast(serialized[:1], 2**62)[0]
                shuffled = tf.random.experimental.stateless_shuffle(
                    shuffled, seed=tf.stack([seed_value, first])
                )
            order, sizes = tf.gather(order, shuffled), tf.gather(sizes, shuffled)
        batches = tf.gather(serialized, tf.reshape(order, [-1]))
        return tf.reshape(batches, [-1, batch_size]), sizes

    # Only map, batch, unbatch and filter: tf.data's FILE auto-sharding
    # walks back to the shard files through those (not through enumerate's
    # second source, flat_map's inner data sets or scan's state). One window
    # is sorted at a time, to bound the memory.
    ds = ds.batch(batch_size * window)
    ds = ds.map(sort)
    ds = ds.unbatch()
    if drop_remainder:
        # Windows hold whole batches: only one of the last can be partial.
        ds = ds.filter(lambda batch, size: size == batch_size)
        # A static batch size lets distribution strategies split the batches.
        ds = ds.map(lambda batch, size: tf.ensure_shape(batch, [batch_size]))
    else:
        ds = ds.map(lambda batch, size: batch[:size])
    if expected >= 0:
        ds = ds.apply(tf.data.experimental.assert_cardinality(expected))
    return ds


def _default_bucket_window(info, split, files, batch_size):
    """Batches per sorting window: about 64 MB of records, 2 to 32 batches."""
    count = max(info.splits[split], 1)
    record_bytes = max(sum(os.path.getsize(f) for f in files) / count, 1)
    batches = int(_BUCKET_WINDOW_BYTES // (record_bytes * batch_size))
    return max(2, min(32, batches))


def _default_shuffle_buffer(info, split, files):
    count = info.splits[split]
    if count == 0:
        return 1
    total_bytes = sum(os.path.getsize(f) for f in files)
    record_bytes = max(total_bytes / count, 1)
    buffer = int(_SHUFFLE_BUFFER_BYTES // record_bytes)
    return max(1, min(count, _MAX_SHUFFLE_BUFFER, max(buffer, 64)))


def make_parser(info, max_lengths=None, with_ids=False, split=None, pool=()):
    """Build the function that turns a batch of serialized records into tensors.

    Args:
        info: `DatasetInfo` of the data set.
        max_lengths: Dict modality -> frames to pad or cut to (defaults to
            `info.max_lengths`).
        with_ids: Also return the clip ids as a third element.
        split: Split name, used in error messages.
        pool: Modalities whose frames are replaced by their mean over the
            clip's valid frames (after the cut to `max_lengths`): `[B, 1, D]`
            with length `min(length, 1)`, so an empty clip stays empty.
            Where the data set stores frame means (`info.frame_means`) and
            no clip is cut (`max_lengths[m] >= info.max_lengths[m]`), the
            stored mean is read and the frames are not parsed at all.

    Returns:
        A function `serialized [B] -> (features, labels)` or
        `(features, labels, ids)`. Records whose frame bytes disagree with
        their length and `feature_dims`, or whose labels lie outside the
        class list, fail with `tf.errors.InvalidArgumentError` naming the
        field and the clip ids.
    """
    import tensorflow as tf

    lengths = dict(info.max_lengths)
    lengths.update(max_lengths or {})
    # The writer cut every clip to info.max_lengths, so reading at least that
    # many frames cuts none and the stored mean is the mean being asked for.
    stored_means = {
        m for m in pool if info.frame_means and lengths[m] >= info.max_lengths[m]
    }
    spec = records.feature_spec(
        info, means=stored_means, frames=set(info.modalities) - stored_means
    )
    num_classes = info.num_classes
    # No quotes in these messages: TensorFlow escapes them in error text.
    where = f"data set {info.path} split {split}"

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        ids = parsed[schema.ID_KEY]
        checks = []
        features = {}
        for m in info.modalities:
            dim = info.feature_dims[m]
            length = parsed[schema.length_key(m)]
            if m in stored_means:
                features[m], features[schema.length_key(m)] = _stored_mean(
                    parsed, m, dim, length, ids, checks
                )
                continue
            max_length = lengths[m]
            frames = _decode(
                parsed[m], length, length * dim * records.BYTES_PER_VALUE, max_length, dim,
                f"{where}: field {m} holds a byte count that disagrees with "
                f"{schema.length_key(m)} x feature_dims[{m}]={dim} x 4 "
                "(wrong frame width or damaged record); clip ids:",
                ids, checks,
            )
            length = tf.cast(tf.minimum(length, max_length), tf.int32)
            if m in pool:
                # Frames after `length` are decode_raw's zero padding.
                count = tf.cast(tf.maximum(length, 1), tf.float32)
                frames = tf.reduce_sum(frames, axis=1, keepdims=True) / count[:, None, None]
                length = tf.minimum(length, 1)
            features[m] = frames
            features[schema.length_key(m)] = length
        label = parsed[schema.LABEL_KEY]
        ok = tf.logical_and(label >= 0, label < num_classes)
        checks.append(tf.debugging.Assert(
            tf.reduce_all(ok),
            [f"{where}: field emotion outside 0..{num_classes - 1}; clip ids:",
             tf.boolean_mask(ids, tf.logical_not(ok))],
            summarize=5,
        ))
        labels = {schema.LABEL_KEY: tf.cast(label, tf.int32)}
        for m in info.modalities:
            key = schema.unimodal_label_key(m)
            value = parsed[key]
            ok = tf.logical_and(value >= schema.UNKNOWN_LABEL, value < num_classes)
            checks.append(tf.debugging.Assert(
                tf.reduce_all(ok),
                [f"{where}: field {key} outside -1..{num_classes - 1}; clip ids:",
                 tf.boolean_mask(ids, tf.logical_not(ok))],
                summarize=5,
            ))
            labels[key] = tf.cast(value, tf.int32)
        if info.has_score:
            labels[schema.SCORE_KEY] = parsed[schema.SCORE_KEY]
        with tf.control_dependencies(checks):
            features = {k: tf.identity(v) for k, v in features.items()}
        if with_ids:
            return features, labels, ids
        return features, labels

    def _decode(raw, length, expected_bytes, rows, dim, message, ids, checks):
        """`[B, rows, dim]` float32 from bytes, zero padded or cut to `rows`;
        asserts each record's byte count and a length >= 0."""
        size = tf.cast(tf.strings.length(raw), tf.int64)
        ok = tf.logical_and(length >= 0, size == expected_bytes)
        checks.append(tf.debugging.Assert(
            tf.reduce_all(ok), [message, tf.boolean_mask(ids, tf.logical_not(ok))], summarize=5,
        ))
        values = tf.io.decode_raw(
            raw, tf.float32, little_endian=True,
            fixed_length=rows * dim * records.BYTES_PER_VALUE,
        )
        return tf.reshape(values, [-1, rows, dim])

    def _stored_mean(parsed, m, dim, length, ids, checks):
        key = schema.mean_key(m)
        mean = _decode(
            parsed[key], length, dim * records.BYTES_PER_VALUE, 1, dim,
            f"{where}: field {key} holds a byte count other than "
            f"feature_dims[{m}]={dim} x 4, or {schema.length_key(m)} is "
            "negative (damaged record); clip ids:",
            ids, checks,
        )
        return mean, tf.cast(tf.minimum(length, 1), tf.int32)

    return parse


def load_dataset(
    path,
    split,
    batch_size=64,
    *,
    shuffle=None,
    seed=None,
    drop_remainder=False,
    cache=False,
    repeat=False,
    with_ids=False,
    num_parallel_reads=None,
    shuffle_buffer=None,
    max_lengths=None,
    num_workers=None,
    verify=False,
    pool=None,
    autotune=False,
    bucket_by=None,
    bucket_window=None,
):
    """Stream one split of a data set as batches for `model.fit`.

    Pipeline: shard file names (shuffled with `seed` for training) ->
    parallel interleaved `TFRecordDataset` reads -> optional cache of the
    serialized records -> seeded record shuffle -> repeat -> batch (or,
    with `bucket_by`, length-sorted batches within windows) ->
    one `tf.io.parse_example` + `tf.io.decode_raw` per batch (which pads or
    truncates every modality to its maximum length) -> `prefetch(AUTOTUNE)`.

    Args:
        path: Data set directory (or a `DatasetInfo` from `load_info`).
        split: Split name, e.g. "train".
        batch_size: Clips per batch (the global batch size under a
            distribution strategy).
        shuffle: Shuffle shards and records; defaults to True for "train".
        seed: Shuffle seed; the same seed gives the same order under the
            same TensorFlow global seed (`tf.random.set_seed`, which
            `keras.utils.set_random_seed`, `build_model` and
            `keras_mre.train` set): tf.data combines the two.
        drop_remainder: Drop the last partial batch.
        cache: False, True (cache serialized records in memory after the
            first pass) or a file path prefix for an on-disk cache.
        repeat: Repeat forever (True) or a number of times.
        with_ids: Yield `(features, labels, ids)` with the clip ids as a
            `[B]` string tensor; otherwise `(features, labels)`.
        num_parallel_reads: Shards read at once when shuffling (default: up
            to 4); without shuffling shards are read one after another so
            that records keep their stored order.
        shuffle_buffer: Records in the shuffle buffer (default: the whole
            split with `cache=True`, else about 256 MB of records, at most
            10,000 and at most the split size).
        max_lengths: Dict modality -> frames, overriding `max_lengths` of
            `dataset.json` for some modalities.
        num_workers: Workers of a MultiWorkerMirroredStrategy; defaults to
            the cluster of the strategy in scope, else the cluster in the
            `TF_CONFIG` environment variable, else 1. Picks the auto-shard
            policy (see `shard_policy`); with several workers an unseeded
            shuffle uses seed 0, so that all workers shuffle alike.
        verify: Run `verify_dataset` on the split first (one full read);
            a damaged shard then raises DataError naming the shard file, the
            record index and the field instead of failing inside `fit`.
        pool: Modalities to average over time here, once per clip, instead
            of in every training step: each becomes `[B, 1, D_m]`, the mean
            of its valid frames, with `<m>_length` `min(length, 1)`. For
            models that read those modalities only through their frame mean
            (`model.pooled_modalities()`: the audio and vision of MRE, LMF
            and TFN), outputs, losses and gradients are unchanged and each
            step moves and reads 1 frame instead of `max_lengths[m]`. Data
            sets written by this version store each clip's frame means
            (`frame_means` in dataset.json); a pooled modality is then read
            from them and its frames are not parsed, unless `max_lengths`
            cuts it shorter than stored. (Their byte counts are then not
            checked here either; `verify` checks everything.)
            `keras_mre.train` passes it; the exported model still takes full
            frame sequences.
        autotune: Let tf.data's autotuner tune the pipeline
            (`tf.data.Options().autotune.enabled`). Off by default: the
            reads, the parse and the prefetch run at tf.data's default
            parallelism, which read the MOSEI-sized split as fast. With the
            autotuner on, discarding an iterator that was not read to its
            end (`Model.fit` stops each epoch at the known batch count and
            then opens the next one) waited for the autotuner's thread to
            wake, up to its optimization period: stalls of 1.5-18 s at the
            start of an epoch with TensorFlow 2.21
            (`benchmarks/results/iterator_teardown.md`).
        bucket_by: A modality name, or a list of them, to group clips of
            similar length into the same batch. The shuffled records are
            taken `bucket_window` batches at a time; each window is sorted
            by the clips' length (the longest of the named modalities, after
            the cut to `max_lengths`) and cut into batches, and the batches
            of a window are yielded in a random order (seeded by `seed`;
            shortest first without `shuffle`).
            Every clip still comes once per epoch and the batch count is
            that of plain batching: at most one batch, in the last window,
            is partial. Models that cut a batch to its longest clip (MulT's
            `TrimPadding`, the text LSTM's loop over `max(lengths)` steps)
            then spend less on padding. Batches are less random than with
            plain batching; the default None batches the shuffled records
            as they come.
        bucket_window: Batches per sorting window with `bucket_by`: a
            positive integer, or None (the default) for about 64 MB of
            records, 2 to 32 batches (4 batches of 64 MOSEI clips, 32 of
            small clips). Larger windows group lengths more tightly but
            hold more memory (a window is copied up to three times while it
            is sorted), and a window is filled before its first batch comes
            out.

    Returns:
        A `tf.data.Dataset` of `(features, labels)`: features
        `{<m>: float32 [B, T_m, D_m], <m>_length: int32 [B]}` (`T_m` is
        `max_lengths[m]`, 1 for pooled modalities), labels
        `{"emotion": int32 [B], "emotion_<m>": int32 [B] (-1 unknown)
        for every modality, "score": float32 [B] when info.has_score}`.

    Raises:
        DataError: missing or malformed dataset.json, unknown split, missing
            shard file, or (with `verify`) a damaged record.
        ConfigError: invalid arguments.
    """
    import tensorflow as tf

    info = _resolve_info(path)
    info.check_split(split)
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"load_dataset: batch_size must be a positive integer, got {batch_size!r}")
    for m, value in (max_lengths or {}).items():
        if m not in info.feature_dims:
            raise ConfigError(f"load_dataset: max_lengths names unknown modality {m!r}")
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"load_dataset: max_lengths[{m!r}] must be a positive integer, got {value!r}")
    pool = _check_pool(info, pool)
    if not isinstance(autotune, bool):
        raise ConfigError(f"load_dataset: autotune must be True or False, got {autotune!r}")
    bucket_by = check_bucket_by(info, bucket_by)
    if bucket_window is not None and (
        not isinstance(bucket_window, numbers.Integral)
        or isinstance(bucket_window, bool)
        or bucket_window < 1
    ):
        raise ConfigError(
            "load_dataset: bucket_window must be a positive integer or None, "
            f"got {bucket_window!r}"
        )
    files = _shard_files(info, split)
    if verify:
        verify_dataset(info, [split])
    if shuffle is None:
        shuffle = split == "train"

    workers = num_workers if num_workers is not None else _num_workers()
    policy = shard_policy(len(files), workers)
    if shuffle and seed is None and workers > 1:
        # DATA sharding keeps every N-th element after the shuffle: all
        # workers must shuffle alike or clips are repeated and lost.
        seed = 0
    file_ds = tf.data.Dataset.from_tensor_slices(tf.constant(files, dtype=tf.string))
    if shuffle and not cache and len(files) > 1:
        file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    compression = info.compression or ""
    # Without shuffling, records come in stored order (shard after shard).
    cycle = (num_parallel_reads or min(4, max(len(files), 1))) if shuffle else 1
    ds = file_ds.interleave(
        lambda f: tf.data.TFRecordDataset(
            f, compression_type=compression, buffer_size=_READ_BUFFER_BYTES
        ),
        cycle_length=max(1, cycle),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    # A known size gives Keras progress bars their total; a shard holding
    # fewer or more records than dataset.json says fails loudly. Under FILE
    # sharding each worker reads only its shards, so the total does not apply.
    if policy != tf.data.experimental.AutoShardPolicy.FILE:
        ds = ds.apply(tf.data.experimental.assert_cardinality(info.splits[split]))
    if cache:
        ds = ds.cache("" if cache is True else os.fspath(cache))
    if shuffle:
        if shuffle_buffer:
            buffer = shuffle_buffer
        elif cache is True:
            # The records are held in memory anyway: shuffle the whole split.
            buffer = max(info.splits[split], 1)
        else:
            buffer = _default_shuffle_buffer(info, split, files)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat is True:
        ds = ds.repeat()
    elif repeat:
        ds = ds.repeat(int(repeat))
    if bucket_by:
        lengths = dict(info.max_lengths)
        lengths.update(max_lengths or {})
        window = bucket_window or _default_bucket_window(info, split, files, batch_size)
        ds = _length_sorted_batches(
            ds, {m: lengths[m] for m in bucket_by}, batch_size, window,
            seed, shuffle, drop_remainder,
        )
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(
        make_parser(info, max_lengths, with_ids, split, pool),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    options.autotune.enabled = autotune
    return ds.with_options(options)


def _check_records(info, shard, start, serialized):
    """Parse a chunk of serialized records and check them; DataError on the first bad one."""
    import tensorflow as tf

    spec = records.feature_spec(info)
    try:
        parsed = tf.io.parse_example(tf.constant(serialized, dtype=tf.string), spec)
    except tf.errors.InvalidArgumentError:
        for offset, record in enumerate(serialized):
            try:
                tf.io.parse_example(tf.constant([record], dtype=tf.string), spec)
            except tf.errors.InvalidArgumentError as error:
                message = error.message.strip().splitlines()[0]
                raise DataError(
                    f"{shard}: record {start + offset} does not match dataset.json: {message}"
                ) from None
        raise
    parsed = {k: v.numpy() for k, v in parsed.items()}
    ids = parsed[schema.ID_KEY]
    num_classes = info.num_classes

    def fail(offset, field, problem):
        clip = ids[offset].decode("utf-8", "replace")
        raise DataError(f"{shard}: record {start + offset} (clip {clip!r}) field {field!r}: {problem}")

    for m in info.modalities:
        dim = info.feature_dims[m]
        lengths = parsed[schema.length_key(m)]
        sizes = np.array([len(b) for b in parsed[m]], dtype=np.int64)
        bad = np.flatnonzero((lengths < 0) | (sizes != lengths * dim * records.BYTES_PER_VALUE))
        if bad.size:
            i = bad[0]
            length = int(lengths[i])
            size = int(sizes[i])
            if length > 0 and size % (length * records.BYTES_PER_VALUE) == 0:
                width = size // (length * records.BYTES_PER_VALUE)
                fail(i, m, f"frame width {width} disagrees with feature_dims[{m!r}] = {dim}")
            fail(i, m, f"{size} bytes for {schema.length_key(m)} = {length}, "
                       f"expected {length} x {dim} x 4 = {length * dim * 4}")
        for i, raw in enumerate(parsed[m]):
            values = np.frombuffer(raw, dtype=records.FRAME_DTYPE)
            if not np.isfinite(values).all():
                fail(i, m, "holds NaN or Inf values")
            if info.frame_means:
                _check_mean(parsed[schema.mean_key(m)][i], values.reshape(-1, dim),
                            m, lambda problem, i=i: fail(i, schema.mean_key(m), problem))
    labels = parsed[schema.LABEL_KEY]
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        fail(bad[0], schema.LABEL_KEY,
             f"class id {labels[bad[0]]} outside 0..{num_classes - 1}")
    for m in info.modalities:
        key = schema.unimodal_label_key(m)
        values = parsed[key]
        bad = np.flatnonzero((values < schema.UNKNOWN_LABEL) | (values >= num_classes))
        if bad.size:
            fail(bad[0], key, f"class id {values[bad[0]]} outside -1..{num_classes - 1}")
    if info.has_score:
        bad = np.flatnonzero(np.isinf(parsed[schema.SCORE_KEY]))
        if bad.size:
            fail(bad[0], schema.SCORE_KEY, "is infinite")


def _check_mean(raw, frames, m, fail):
    """Calls `fail(problem)` unless `raw` is the float32 mean of `frames`."""
    dim = frames.shape[1]
    if len(raw) != dim * records.BYTES_PER_VALUE:
        fail(f"{len(raw)} bytes, expected feature_dims[{m!r}] x 4 = "
             f"{dim * records.BYTES_PER_VALUE}")
    stored = np.frombuffer(raw, dtype=records.FRAME_DTYPE)
    expected = records.frame_mean(frames)
    # The writer stores the float64 mean rounded once to float32; other
    # writers may sum in float32, so allow 1e-5 of the frames' magnitude.
    scale = max(float(np.abs(frames).max(initial=0.0)), 1.0)
    error = np.abs(stored.astype(np.float64) - expected)
    if not np.all(error <= 1e-5 * scale):
        column = int(np.argmax(np.where(np.isnan(error), np.inf, error)))
        fail(f"value {stored[column]} at column {column} is not the mean of the "
             f"{frames.shape[0]} frames of field {m!r} ({expected[column]})")


def verify_dataset(path, splits=None, *, chunk_size=256, progress=False):
    """Read every record of a data set and check it against dataset.json.

    Checks that every shard exists and reads to its end (no corrupt or
    truncated records), that every record parses with the features that
    dataset.json describes, that frame byte counts match lengths and
    feature dims, that frames are finite, that stored frame means (where
    dataset.json has `frame_means`) are the means of the frames, that
    labels lie in the class list, and that each split holds the number of
    clips dataset.json says.

    Args:
        path: Data set directory or `DatasetInfo`.
        splits: Splits to check (default: all).
        chunk_size: Records parsed at once.
        progress: Show a progress bar.

    Returns:
        Dict split -> number of records read.

    Raises:
        DataError: naming the shard file, the record index within it and
            the field for the first problem found.
    """
    import tensorflow as tf
    from tqdm.auto import tqdm

    info = _resolve_info(path)
    splits = list(info.splits) if splits is None else list(splits)
    counts = {}
    for split in splits:
        info.check_split(split)
        total = 0
        bar = tqdm(total=info.splits[split], desc=f"verify {split}", unit="clip",
                   disable=not progress, leave=False)
        for shard in _shard_files(info, split):
            iterator = iter(tf.data.TFRecordDataset(shard, compression_type=info.compression or ""))
            index = 0
            chunk = []
            while True:
                try:
                    record = next(iterator)
                except StopIteration:
                    break
                except tf.errors.DataLossError as error:
                    message = error.message.strip().splitlines()[0]
                    raise DataError(
                        f"{shard}: corrupt or truncated at record {index} "
                        f"(records before it are intact): {message}"
                    ) from None
                chunk.append(record.numpy())
                index += 1
                if len(chunk) == chunk_size:
                    _check_records(info, shard, index - len(chunk), chunk)
                    bar.update(len(chunk))
                    chunk = []
            if chunk:
                _check_records(info, shard, index - len(chunk), chunk)
                bar.update(len(chunk))
            if index == 0:
                raise DataError(
                    f"{shard}: holds no records (every shard listed in dataset.json "
                    "holds at least one clip)"
                )
            total += index
        bar.close()
        if total != info.splits[split]:
            raise DataError(
                f"{os.path.join(info.path, 'dataset.json')}: split {split!r} has {total} "
                f"records in its shards, dataset.json says {info.splits[split]}"
            )
        counts[split] = total
    return counts
