"""A serverless CRON job: runs on a schedule and records each run.

EventBridge delivers a "Scheduled Event" whose `time` is the tick that
fired; the function logs it (CloudWatch Logs keeps every run) and returns.
"""

import json


def lambda_handler(event, context):
    print(f"cron job run for tick {event.get('time')} "
          f"({event.get('detail-type')}, rule {event.get('resources')})")
    print(json.dumps(event))
    return {"tick": event.get("time")}
