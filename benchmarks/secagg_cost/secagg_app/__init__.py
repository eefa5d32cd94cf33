"""SecAgg+ cost benchmark app (legacy Flower API, the only path with SecAgg+ in Flower 1.42)."""
