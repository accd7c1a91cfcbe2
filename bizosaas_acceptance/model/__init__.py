"""What the target should be: manifest, compose import, API description, target."""
