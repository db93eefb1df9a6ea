"""keras-mre: Multimodal Relevance Estimation for emotion recognition in Keras 3."""

import pathlib

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent


def _requirements():
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [
        line.strip()
        for line in lines
        if line.strip() and not line.startswith(("#", "-"))
    ]


setup(
    name="keras-mre",
    version="0.1.0",
    description=(
        "Multimodal Relevance Estimation (MRE) for multimodal emotion "
        "recognition with Keras 3 and TensorFlow"
    ),
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_mre", "keras_mre.*"])
    + ["keras_mre_pipelines"],
    package_dir={"keras_mre_pipelines": "pipelines"},
    install_requires=_requirements(),
    extras_require={
        "mediapipe": ["mediapipe==1.2.3"],
    },
    entry_points={"console_scripts": ["keras-mre=keras_mre.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
