"""What `pip install ".[all]"` promises: every optional dependency fastdet imports is named, with
the extra that installs it, by the error a missing one raises, and those extras exist."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomllib
from fastdet import _optional

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def _extras() -> dict[str, list[str]]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]


@pytest.mark.parametrize("module", sorted(_optional.EXTRAS))
def test_a_missing_dependency_names_its_extra(monkeypatch, module) -> None:
    package, extra = _optional.EXTRAS[module]
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError) as caught:
        _optional.require(module, "this step")
    message = str(caught.value)
    assert message.startswith(f"this step needs {package}: pip install ")
    if extra is None:
        assert message.endswith(f"pip install {package}")
        return
    assert f"'fastdet[{extra}]'" in message
    extras = _extras()
    assert any(req.startswith(package) for req in extras[extra]), extras[extra]
    # `all` brings every extra that a module maps to (tensorrt aside: NVIDIA's index), but for
    # those it leaves out on purpose, whose message does not send users to it
    assert (extra in extras["all"][0]) == (extra not in _optional.OUTSIDE_ALL)
    assert ("fastdet[all]" in message) == (extra not in _optional.OUTSIDE_ALL)


def test_the_all_extra_covers_the_readme() -> None:
    extras = _extras()
    assert extras["all"] == ["fastdet[onnx,zoo,eval,vision,report,openvino]"]
    readme = (PYPROJECT.parent / "README.md").read_text()
    install = readme.split("## Install and run", 1)[1].split("##", 1)[0]
    commands = [line for line in install.split("```bash", 1)[1].split("```", 1)[0].splitlines()]
    assert [c.split("#")[0].strip() for c in commands if c.strip()] == [
        'pip install ".[all]"',
        "fastdet bench",
    ]


def test_reading_images_without_opencv_names_the_vision_extra(monkeypatch, tmp_path) -> None:
    from fastdet.image_files import read_image

    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"reading image files needs opencv-python-headless: "):
        read_image(tmp_path / "a.jpg", "source")


def test_ray_without_the_extra_names_it(monkeypatch) -> None:
    import importlib.util

    import fastdet.ray

    monkeypatch.delitem(sys.modules, "fastdet.ray.serving", raising=False)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"fastdet.ray.detect needs ray\[data,serve\]: pip inst"):
        fastdet.ray.detect("photos/", "yolov7-tiny")
    with pytest.raises(ImportError, match=r"^fastdet.ray.serving needs ray\[data,serve\]: pip"):
        importlib.import_module("fastdet.ray.serving")
    # Ray without its serve part: the part is named, with the extra that brings it.
    monkeypatch.undo()
    if importlib.util.find_spec("ray") is None:
        pytest.skip("needs Ray itself (the ray extra: pip install 'fastdet[ray]')")
    monkeypatch.delitem(sys.modules, "fastdet.ray.serving", raising=False)
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    with pytest.raises(ImportError, match=r"needs ray.serve \(part of ray\[data,serve\]\): pip"):
        importlib.import_module("fastdet.ray.serving")
