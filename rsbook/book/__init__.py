"""The book pipeline: profiles, running chapters with papermill, building the HTML, claims, plots and tables."""
