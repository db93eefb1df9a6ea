"""keras-mre data sets: the TFRecord format, writing and tf.data reading.

```python
from keras_mre import data
info = data.load_info("data/sdme")
train = data.load_dataset("data/sdme", "train", batch_size=64, seed=0)
```
"""

from keras_mre.data import schema
from keras_mre.data.diagnose import explain_read_errors
from keras_mre.data.info import FORMAT_VERSION
from keras_mre.data.info import INFO_FILENAME
from keras_mre.data.info import DatasetInfo
from keras_mre.data.info import load_info
from keras_mre.data.reader import check_bucket_by
from keras_mre.data.reader import load_dataset
from keras_mre.data.reader import verify_dataset
from keras_mre.data.writer import Clip
from keras_mre.data.writer import clips_from_arrays
from keras_mre.data.writer import write_dataset

__all__ = [
    "FORMAT_VERSION",
    "INFO_FILENAME",
    "Clip",
    "DatasetInfo",
    "check_bucket_by",
    "clips_from_arrays",
    "explain_read_errors",
    "load_dataset",
    "load_info",
    "schema",
    "verify_dataset",
    "write_dataset",
]
