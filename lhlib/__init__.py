"""The helper package of the executable companion to Kiselev & Grabovoy, "Unraveling the Hessian" (arXiv 2409.11995)."""
