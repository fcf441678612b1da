"""`python -m services.emotion` starts the emotion service."""

from masterx_runtime.server import main
from services.emotion.app import EmotionApp

if __name__ == "__main__":
    main(EmotionApp, EmotionApp)
