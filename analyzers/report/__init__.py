"""The analysis report for people and machines: text, markdown, JSON, and the one module that formats units."""
