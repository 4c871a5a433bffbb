"""The Python API in a Jupyter notebook, executed cell by cell by a real kernel (nbclient and
ipykernel, as Jupyter runs it): built-in test models and a model function defined in a cell both
work on 2 workers."""

from __future__ import annotations

from pathlib import Path

CELLS = [
    "import parainfer",
    "def shout(texts):\n    return [{'upper': t.upper()} for t in texts]",
    "print(parainfer.predict(['abc', 'de'], model='parainfer.testing:echo', workers=2))",
    "print(parainfer.predict(['abc', 'de', 'f'], model=shout, workers=2, batch_size=1))",
]


def test_a_notebook_runs_the_api_with_a_function_of_its_own(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell's traceback, if a cell fails
    printed = ["".join(out.get("text", "") for out in cell.outputs
                       if out.output_type == "stream" and out.name == "stdout").strip()
               for cell in notebook.cells]
    assert printed == ["", "", "[{'length': 3}, {'length': 2}]",
                       "[{'upper': 'ABC'}, {'upper': 'DE'}, {'upper': 'F'}]"]
