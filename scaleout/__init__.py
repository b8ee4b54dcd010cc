"""Inference scaled out on Ray: bulk embedding on Ray Data (ray_embed.py).

The only package that imports ray. The command line imports its modules inside
the commands that use them, so `clipsearch --help` never loads ray.
"""
