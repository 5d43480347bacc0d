"""Per-chapter settings (per profile), config builders, and the papers' published numbers."""
