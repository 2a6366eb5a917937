"""Chat channels — where conversations reach people: Slack now; a Teams channel implements the same Surface."""
