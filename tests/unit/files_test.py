"""Records a rerun resumes from: written whole or not at all, and read with a one-line error."""

import pytest
from helpers import kill_mid_write

from mlp_jax import files
from mlp_jax.errors import UserError


def test_a_kill_while_a_record_is_written_leaves_the_last_one_whole(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    files.write_record(path, {"rows": {"recipe": 0.9162}})
    kill_mid_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        files.write_record(path, {"rows": {"recipe": 0.9162, "without MixUp": 0.9110}})
    monkeypatch.undo()
    assert files.read_record(path) == {"rows": {"recipe": 0.9162}}
    files.write_record(path, {"rows": {}})  # The next write replaces the one cut short.
    assert files.read_record(path) == {"rows": {}}


def test_a_record_that_is_not_json_is_a_one_line_error_naming_it(tmp_path):
    path = tmp_path / "tune.json"
    assert files.read_record(path) is None
    path.write_text('{"history": [[{"val_acc": 0.91')
    with pytest.raises(UserError, match="tune.json: not valid JSON") as raised:
        files.read_record(path)
    assert "\n" not in str(raised.value) and "delete it" in str(raised.value)


def test_find_file_looks_in_the_folder_then_above_it(tmp_path, monkeypatch):
    (tmp_path / "experiments").mkdir()
    model = tmp_path / "experiments" / "model.py"
    model.write_text("")
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert files.find_file("experiments/model.py") == model
    assert files.find_file(model) == model
    monkeypatch.chdir(tmp_path)
    assert files.find_file("experiments/model.py") == model
    with pytest.raises(UserError, match=r"experiments/other.py: no such file in .*a/b"):
        monkeypatch.chdir(tmp_path / "a" / "b")
        files.find_file("experiments/other.py")
