"""Write the synthetic default corpus (see data/README.md); the generator lives in `led.data.synthetic`.

    python data/generate.py --out data/synthetic
"""

from led.data.synthetic import main

if __name__ == "__main__":
    main()
