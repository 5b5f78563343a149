import sys
from pathlib import Path

# why: build/ and models/ are source folders, not installed packages; trt_standin.py is
# a helper module beside these tests (pytest runs in importlib mode: no implicit path)
REPO = Path(__file__).resolve().parents[2]
for path in (REPO, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
