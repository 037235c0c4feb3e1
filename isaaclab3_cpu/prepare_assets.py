"""Make the scene assets Isaac-Cartpole needs from files its packages ship, so nothing is downloaded.

    python isaaclab3_cpu/prepare_assets.py ASSET_ROOT     (then ISAACSIM_ASSET_ROOT=ASSET_ROOT)

Isaac Lab looks its assets up under ``$ISAACSIM_ASSET_ROOT/Isaac/IsaacLab/...`` and fetches
them from NVIDIA's servers otherwise. The cartpole is Newton's copy of Isaac Lab's own
``cartpole.usd`` (shipped as ``newton/examples/assets/cartpole_single_pendulum.usda``, whose
``defaultPrim`` names a prim that does not exist, so it is set to the cartpole); the ground
is a plane with a collision shape, which is all the Newton physics uses of Isaac's grid.
"""

import sys
from pathlib import Path

import newton.examples
from pxr import Usd

CARTPOLE = "Isaac/IsaacLab/Robots/Classic/Cartpole/cartpole.usd"
GROUND_PLANE = "Isaac/IsaacLab/Environments/Grid/default_ground_plane_checker_v1/default_ground_plane.usda"
GROUND_PLANE_USDA = """#usda 1.0
(
    defaultPrim = "GroundPlane"
    metersPerUnit = 1
    upAxis = "Z"
)

def Xform "GroundPlane"
{
    def Plane "CollisionPlane" (
        prepend apiSchemas = ["PhysicsCollisionAPI"]
    )
    {
        uniform token axis = "Z"
        double length = 100
        double width = 100
    }
}
"""


def main(asset_root: Path) -> None:
    source = Path(newton.examples.__file__).parent / "assets" / "cartpole_single_pendulum.usda"
    stage = Usd.Stage.Open(str(source))
    stage.SetDefaultPrim(stage.GetPrimAtPath("/cartpole"))
    cartpole = asset_root / CARTPOLE
    cartpole.parent.mkdir(parents=True, exist_ok=True)
    stage.GetRootLayer().Export(str(cartpole))
    ground = asset_root / GROUND_PLANE
    ground.parent.mkdir(parents=True, exist_ok=True)
    ground.write_text(GROUND_PLANE_USDA)
    print(f"assets ready under {asset_root}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve())
