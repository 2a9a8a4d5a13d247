"""Write names.txt: the public names of the real CuPy that minidl may use.

The stand-in refuses every name not in this list, so code that passes under it
calls nothing the real CuPy lacks. Regenerate after a CuPy upgrade (the wheel
imports without a GPU):

    pip install --target /tmp/cupy14 cupy-cuda12x
    PYTHONPATH=/tmp/cupy14 python tests/cupy_standin/make_names.py
"""
import os

import cupy
import cupy.lib.stride_tricks
import cupyx

SPACES = {"cupy": cupy, "cupy.ndarray": cupy.ndarray, "cupy.random": cupy.random,
          "cupy.random.Generator": cupy.random.Generator, "cupy.lib.stride_tricks": cupy.lib.stride_tricks,
          "cupy.cuda": cupy.cuda, "cupy.cuda.runtime": cupy.cuda.runtime, "cupy.cuda.Device": cupy.cuda.Device,
          "cupy.ufunc": cupy.ufunc, "cupyx": cupyx}
with open(os.path.join(os.path.dirname(__file__), "names.txt"), "w") as f:
    f.write(f"# public names of CuPy {cupy.__version__}, written by make_names.py\n")
    for space, obj in SPACES.items():
        for name in sorted(dir(obj)):
            if not name.startswith("_") or name in ("__array__", "__array_ufunc__", "__array_function__",
                                                    "__cuda_array_interface__", "__dlpack__"):
                f.write(f"{space}: {name}\n")
