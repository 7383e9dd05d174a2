"""Print one 'N passed, N failed, N skipped' line from the JUnit XML files Pants wrote; exit 1 on failures."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

passed = failed = skipped = 0
for xml in sorted(Path(sys.argv[1] if len(sys.argv) > 1 else "dist/test/reports").rglob("*.xml")):
    for case in ET.parse(xml).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or not passed else 0)
