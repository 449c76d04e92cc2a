from bgtaskex.client import Client
from tests.scripted import calls


def test_two_actions_in_one_run(client: Client, calls_log: str) -> None:
    tid = client.enqueue(
        "two",
        [
            ("tests.scripted:Scripted", {"name": "A", "log": calls_log}),
            ("tests.scripted:Scripted", {"name": "B", "log": calls_log}),
        ],
    )
    summary = client.run_once()
    assert summary.finished == 1
    assert calls(calls_log) == [("A", "init"), ("A", "execute"), ("B", "init"), ("B", "execute")]
    task = client.get(tid)
    assert task.status == "finished"
    assert [a.status for a in task.actions] == ["done", "done"]
