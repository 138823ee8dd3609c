"""`newsletter stats`: how each issue did and how the list grows (numbers.py), and the
HTML report with its charts (report.py). Reads only what the newsletter records anyway."""
