import sys
from pathlib import Path

# why: build/ and models/ are source folders, not installed packages
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
