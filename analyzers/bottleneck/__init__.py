"""Root causes of slow steps: the step model, attribution of every ns to one cause, and what-if gains."""
