"""Code every Closeloop service uses; no service's business rules live here."""
