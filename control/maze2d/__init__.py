"""Maze2D: layouts, the waypoint oracle, D4RL-recipe data, evaluation and the Diffuser planner."""
