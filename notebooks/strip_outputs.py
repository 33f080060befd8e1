"""Remove outputs and execution counts from the notebooks, so git holds only their code (a test checks it)."""

import glob
import os

import nbformat

for path in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "*.ipynb"))):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, path)
    print(f"stripped {os.path.relpath(path)}")
