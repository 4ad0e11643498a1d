"""Prompt datasets for `--prompts`: .jsonl, .csv, .parquet, a `datasets` save_to_disk folder, chats in a `messages`
column through the chat template, the other columns kept for reward functions; the shipped question/answer file
and the documented example command that trains on it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from pgcore.engine.cli import main
from pgcore.engine.prompt_data import PromptData, format_prompt_data, load_prompt_data

ROOT = Path(__file__).resolve().parents[2]
ROWS = [{"prompt": "1+2=", "answer": "3", "level": 1}, {"prompt": "20+5=", "answer": "25", "level": 2},
        {"prompt": "7+7=", "answer": "14", "level": 1}]


def _write(path: Path, rows=ROWS) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet", ".json"])
def test_table_files_give_prompts_and_the_other_columns(suffix, tmp_path):
    data = load_prompt_data(_write(tmp_path / f"qa{suffix}"))
    assert data.prompts == ["1+2=", "20+5=", "7+7="]
    assert data.columns["answer"] == ["3", "25", "14"]
    # CSV cells stay the strings written; JSON and parquet keep their types
    assert data.columns["level"] == (["1", "2", "1"] if suffix == ".csv" else [1, 2, 1])
    prompts, cols = data.rows([2, 0], repeat=2)
    assert prompts == ["7+7=", "7+7=", "1+2=", "1+2="] and cols["answer"] == ["14", "14", "3", "3"]


def test_a_saved_datasets_folder_and_the_prompt_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"question": r["prompt"], **r} for r in ROWS]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    data = load_prompt_data(tmp_path / "ds", prompt_column="question")
    assert data.prompts == ["1+2=", "20+5=", "7+7="] and set(data.columns) == {"prompt", "answer", "level"}
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    assert load_prompt_data(tmp_path / "dd").columns["answer"] == ["3", "25", "14"]


def test_a_messages_column_goes_through_the_chat_template(tmp_path):
    from lm_fakes import make_policy

    chats = [{"messages": [{"role": "system", "content": "Add."}, {"role": "user", "content": r["prompt"]}],
              "answer": r["answer"]} for r in ROWS]
    data = load_prompt_data(_write(tmp_path / "chat.jsonl", chats))
    assert data.prompts[0][1] == {"role": "user", "content": "1+2="} and data.columns == {"answer": ["3", "25", "14"]}
    policy = make_policy()
    with pytest.raises(ValueError, match="no chat template"):
        format_prompt_data(policy, data)
    policy.tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                                      "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert format_prompt_data(policy, data)[0] == "<system>Add.<user>1+2=<assistant>"
    assert format_prompt_data(policy, PromptData(["plain"])) == ["plain"]  # text prompts: as before


@pytest.mark.parametrize("content,words", [
    ('{"text": "a"}\n', "no column 'prompt' (its columns: 'text')"),
    ('{"prompt": ""}\n', "row 0 has prompt ''"),
    ('{"prompt": 5}\n', "row 0 has prompt 5"),
    ('{"prompt": "a", "completions": 1}\n', "column 'completions'"),
    ('not json\n', "line 1 is not JSON"),
    ('[1, 2]\n', "line 1 is list"),
])
def test_bad_datasets_are_one_line_errors(content, words, tmp_path):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(ValueError) as e:
        load_prompt_data(tmp_path / "bad.jsonl")
    assert words in str(e.value) and "\n" not in str(e.value), e.value


def test_a_missing_file_or_offline_hub_name_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_prompt_data(tmp_path / "none.parquet")
    pytest.importorskip("datasets")
    with pytest.raises(ValueError) as e:  # HF_DATASETS_OFFLINE=1: no hub
        load_prompt_data("no-such-user-xyz/no-such-dataset")
    assert "no-such-user-xyz/no-such-dataset" in str(e.value) and "\n" not in str(e.value)


def test_text_files_load_as_before():
    from pgcore.lm.models import load_prompts

    assert load_prompt_data(None).prompts == load_prompts(None)
    assert load_prompt_data("data/chat_prompts.txt").prompts == load_prompts("data/chat_prompts.txt")
    assert load_prompt_data(None).columns == {}


def test_the_shipped_question_answer_file_is_what_its_script_makes():
    import importlib.util

    from pgcore.files import data_path
    from pgcore.lm.arith import is_heldout

    spec = importlib.util.spec_from_file_location("make_arith_qa", data_path("make_arith_qa.py"))
    make_arith_qa = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_arith_qa)

    path = data_path("arith_qa.jsonl")
    assert path.read_text(encoding="utf-8") == make_arith_qa.text()
    data = load_prompt_data("data/arith_qa.jsonl")
    assert len(data.prompts) == 400 and {"question", "answer", "a", "b"} <= set(data.columns)
    assert not any(is_heldout(a, b) for a, b in zip(data.columns["a"], data.columns["b"]))
    assert all(p == f"{a}+{b}=" and ans == str(a + b)
               for p, a, b, ans in zip(data.prompts, data.columns["a"], data.columns["b"], data.columns["answer"]))


def _documented_command() -> list[str]:
    text = (ROOT / "docs" / "lm.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S) if "data/arith_qa.jsonl" in b)
    line = block.replace("\\\n", " ").strip().splitlines()[0]
    return line.split()[3:]  # after `python -m pgcore.lm`


def test_the_documented_example_trains_on_the_shipped_file(tmp_path, capsys, monkeypatch):
    args = _documented_command()
    assert "--reward-fn" in args and "examples/qa_rewards.py:correctness_reward" in args
    monkeypatch.chdir(ROOT)  # the example names examples/qa_rewards.py from the checkout
    args[args.index("--steps") + 1] = "3"  # a short run of the same command
    code = main([*args, "--quiet", "--output-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ck"),
                 "--model-dir", str(tmp_path / "m")])
    assert code == 0, capsys.readouterr().err
    df = pd.read_csv(tmp_path / "out" / "training_metrics.csv")
    assert list(df["step"]) == [1, 2, 3]
    assert df["reward/correctness_reward_mean"].between(0, 1).all() and "reward/format_reward_mean" in df
    # tiny-arith already answers many of these: the correctness reward is not all zeros
    assert df["reward/correctness_reward_mean"].max() > 0
