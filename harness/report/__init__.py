"""What a study found, read from the stores only: tables, intervals, figures and the HTML page."""
