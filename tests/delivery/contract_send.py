"""Run one campaign with the contract's test messages: `python contract_send.py ROOT CAMPAIGN_ID`.

The kill test starts this in a subprocess and kill -9s it part-way.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: `tests.…`

from newsletter.delivery.sending import run_campaign  # noqa: E402
from newsletter.settings import load_settings  # noqa: E402
from tests.delivery.messages import make_test_message  # noqa: E402


def main() -> None:
    root, campaign_id = Path(sys.argv[1]), int(sys.argv[2])
    report = run_campaign(load_settings(root), campaign_id, make_test_message)
    print(report.campaign.counts.as_dict())
    if report.error:
        print(report.error, file=sys.stderr)
        sys.exit(6)


if __name__ == "__main__":
    main()
